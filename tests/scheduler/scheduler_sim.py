"""A fake runner for scheduler tests: writes fake KV into slots and checks what it reads.

The fake KV of token p of a sequence is the tuple of its tokens [0, p]: like real KV it depends
on the whole prefix, so a prefix hit, a slot mapping or a block reuse that is wrong shows up as
a mismatch when a later step reads the cache.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from scheduler import BlockManager, Scheduler, SchedulerOutput, Sequence

EOS = 0


def sample(seq: Sequence, vocab: int = 5) -> int:
    """A deterministic 'model': the next token depends only on the tokens so far."""
    tokens = seq.all_token_ids
    return (sum(tokens[-3:]) * 7 + len(tokens)) % vocab


def slot(seq: Sequence, pos: int, block_size: int) -> int:
    return seq.block_table[pos // block_size] * block_size + pos % block_size


def check_blocks(bm: BlockManager, holders: list[Sequence]) -> None:
    """Refcounts equal the holders, and every block is in exactly one state."""
    counts = Counter(b for seq in holders for b in seq.block_table)
    for seq in holders:
        assert len(set(seq.block_table)) == len(seq.block_table), seq.seq_id
    free = set(bm.free_ids)
    assert len(free) == len(bm.free_ids), "a block is free twice"
    assert not free & set(bm.cached_free), "a block is both free and cached-free"
    for block in bm.blocks:
        assert block.ref_count == counts[block.block_id], block
        is_free = block.block_id in bm.cached_free or block.block_id in free
        assert is_free == (block.ref_count == 0), block
        if block.block_id in bm.cached_free:
            assert bm.hash_to_block[block.hash] == block.block_id
        if block.block_id in free:
            assert block.hash is None
    for h, block_id in bm.hash_to_block.items():
        assert bm.blocks[block_id].hash == h


@dataclass
class FakeRunner:
    block_size: int
    kv: dict[int, tuple[int, ...]] = field(default_factory=dict)
    num_computed: int = 0  # tokens the runner actually ran

    def execute(self, out: SchedulerOutput) -> dict[str, int]:
        """Check the context each chunk attends to, write its KV, sample where due."""
        sampled = {}
        for item in out.scheduled:
            seq, tokens = item.seq, item.seq.all_token_ids
            end = item.start + item.num_new_tokens
            assert len(seq.block_table) * self.block_size >= end, "blocks missing for chunk"
            for p in range(item.start):
                assert self.kv.get(slot(seq, p, self.block_size)) == tuple(tokens[: p + 1])
            for p in range(item.start, end):
                self.kv[slot(seq, p, self.block_size)] = tuple(tokens[: p + 1])
            self.num_computed += item.num_new_tokens
            if item.needs_sample:
                sampled[seq.seq_id] = sample(seq)
        return sampled


def step(sched: Scheduler, runner: FakeRunner, eos: bool = False, check=None) -> SchedulerOutput:
    """One engine step: schedule, (check,) run, update, finish what hit max_tokens (or EOS)."""
    out = sched.schedule()
    if check is not None:
        check(out)
    sampled = runner.execute(out)
    for seq in sched.update(out, sampled):
        done = len(seq.output_token_ids) >= seq.max_tokens
        if done or (eos and seq.output_token_ids[-1] == EOS):
            sched.finish(seq.seq_id, "length" if done else "stop")
    return out
