"""Hypothesis: random arrivals, prompts, aborts and tiny KV pools against the scheduler.

Every step checks the budget, the seat limit, refcounts against block tables, that each
running sequence is scheduled, and (through the fake runner) that every token attends to the
right KV. At the end every request has finished or been aborted within a step bound, every
block is free, and prefix caching changed no output.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import partial

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from scheduler_sim import FakeRunner, check_blocks, slot, step

from scheduler import BlockManager, Scheduler, SchedulerConfig, Sequence, SequenceStatus

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Request:
    seq_id: str
    prompt: list[int]
    max_tokens: int
    arrival: int  # step at which it is added
    abort_at: int | None  # step at which the client goes away


@st.composite
def scenarios(draw) -> tuple[SchedulerConfig, list[Request]]:
    block_size = draw(st.sampled_from([1, 2, 4, 8]))
    num_blocks = draw(st.integers(3, 16))
    max_num_seqs = draw(st.integers(1, 6))
    max_num_batched_tokens = draw(st.integers(max_num_seqs, max_num_seqs + 40))
    cfg = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_prefill_while_decoding=draw(st.integers(1, max_num_batched_tokens + 4)),
        block_size=block_size,
        num_blocks=num_blocks,
        max_model_len=draw(
            st.integers(max(2, num_blocks * block_size // 2), num_blocks * block_size)
        ),
        enable_prefix_caching=True,
        max_preemptions=draw(st.integers(0, 3)),
    )
    shared = draw(st.lists(st.integers(1, 4), min_size=24, max_size=24))  # prefix-hit fodder
    requests = []
    for i in range(8 - draw(st.integers(0, 7))):  # lean to many requests and long outputs
        prompt = shared[: draw(st.integers(0, 24))] + draw(st.lists(st.integers(1, 4), max_size=20))
        prompt = (prompt or [3])[: cfg.max_model_len - 1]
        room = cfg.max_model_len - len(prompt)
        max_tokens = room - draw(st.integers(0, room - 1))
        abort_at = draw(st.integers(0, 40)) if draw(st.integers(0, 3)) == 0 else None
        requests.append(Request(f"r{i}", prompt, max_tokens, draw(st.integers(0, 6)), abort_at))
    return cfg, requests


def check_step(sched: Scheduler, out, before: dict[str, int]) -> None:
    cfg = sched.config
    ids = [s.seq.seq_id for s in out.scheduled]
    assert out.num_batched_tokens == sum(s.num_new_tokens for s in out.scheduled)
    assert out.num_batched_tokens <= cfg.max_num_batched_tokens
    assert len(ids) == len(set(ids)) <= cfg.max_num_seqs
    assert out.num_decodes + out.num_prefill_tokens == out.num_batched_tokens
    # With decodes running when the step was planned, its prefill has a budget of its own.
    decoding = any(s.is_decode and s.seq.seq_id in before for s in out.scheduled)
    if decoding:
        assert cfg.max_prefill_while_decoding <= out.prefill_budget
    elif not out.preempted:  # (a decoder planned for may have been preempted)
        assert out.prefill_budget == cfg.max_num_batched_tokens
    assert out.num_prefill_tokens <= out.prefill_budget
    skipped = [s for s in sched.running if s.seq_id not in ids]
    for s in skipped:  # only a prefill, and only once the step's prefill budget is spent
        assert s.num_uncomputed_tokens > 1 or not s.output_token_ids, s.seq_id
        assert out.num_prefill_tokens == out.prefill_budget
    for item in out.scheduled:
        admitted_at = item.seq.num_cached_tokens  # a new admission starts after its hits
        assert item.num_new_tokens >= 1 and item.start == before.get(item.seq.seq_id, admitted_at)
        assert item.start + item.num_new_tokens <= item.seq.num_tokens
    for seq_id in out.preempted:
        assert sched.seqs[seq_id].status is SequenceStatus.WAITING
    check_blocks(sched.block_manager, sched.running)


def simulate(cfg: SchedulerConfig, requests: list[Request], eos: bool) -> dict[str, list[int]]:
    """Run to completion; returns the outputs of requests that finished on their own."""
    sched, runner = Scheduler(cfg), FakeRunner(cfg.block_size)
    computed = defaultdict(int)  # tokens run since the last (re)admission
    total = sum(len(r.prompt) + r.max_tokens for r in requests)
    bound = 13 + total * (cfg.max_preemptions + 2)
    seqs, finished = {}, {}
    for t in range(bound):
        for r in requests:
            if r.arrival == t:
                seqs[r.seq_id] = Sequence(r.seq_id, r.prompt, r.max_tokens)
                sched.add(seqs[r.seq_id])
            if r.abort_at == t:
                sched.abort(r.seq_id)
        if t > 12 and not sched.has_unfinished():
            break
        before = {s.seq_id: s.num_computed_tokens for s in sched.running}
        out = step(sched, runner, eos, check=partial(check_step, sched, before=before))
        for item in out.scheduled:
            computed[item.seq.seq_id] += item.num_new_tokens
        for seq_id in out.preempted:
            computed[seq_id] = 0
        for seq_id, seq in seqs.items():
            if seq.finish_reason in ("stop", "length") and seq_id not in finished:
                assert seq.num_cached_tokens + computed[seq_id] == seq.num_tokens - 1
                finished[seq_id] = list(seq.output_token_ids)
    else:
        raise AssertionError(f"requests still unfinished after {bound} steps")
    bm = sched.block_manager
    event(f"preemptions: {min(sum(s.num_preemptions for s in seqs.values()), 3)}")
    event(f"prefix hits: {bm.num_prefix_hits > 0}")
    assert all(s.is_finished for s in seqs.values()) and len(seqs) == len(requests)
    assert all(b.ref_count == 0 for b in bm.blocks) and bm.num_free_blocks == cfg.num_blocks
    assert bm.usage == 0.0 and bm.num_prefix_hits <= bm.num_prefix_queries
    return finished


@FAST
@given(scenarios(), st.booleans())
def test_random_traffic_finishes_without_leaks(scenario, eos):
    cfg, requests = scenario
    simulate(cfg, requests, eos)


@FAST
@given(scenarios())
def test_prefix_caching_changes_no_output(scenario):
    cfg, requests = scenario
    with_cache = simulate(cfg, requests, eos=False)
    no_cache = SchedulerConfig(**{**vars(cfg), "enable_prefix_caching": False})
    without = simulate(no_cache, requests, eos=False)
    for seq_id in with_cache.keys() & without.keys():  # an abort may race a finish
        assert with_cache[seq_id] == without[seq_id]


class BlockManagerMachine(RuleBasedStateMachine):
    """Random allocate/run/grow/free on a small pool; the fake KV proves each prefix hit."""

    def __init__(self):
        super().__init__()
        self.bm = BlockManager(num_blocks=8, block_size=2)
        self.live: list[Sequence] = []
        self.kv: dict[int, tuple[int, ...]] = {}
        self.num_made = 0

    @rule(tokens=st.lists(st.integers(1, 3), min_size=1, max_size=12), chunk=st.integers(1, 12))
    def admit(self, tokens, chunk):
        seq = Sequence(f"s{self.num_made}", tokens, max_tokens=4)
        self.num_made += 1
        chunk = min(chunk, seq.num_tokens - self.bm.num_cached_tokens(seq))
        if self.bm.can_allocate(seq, chunk):
            self.bm.allocate(seq, chunk)
            assert seq.num_cached_tokens % 2 == 0 and seq.num_cached_tokens < seq.num_tokens
            self._read(seq)
            self._run(seq, chunk)
            self.live.append(seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def run_or_grow(self, data):
        seq = data.draw(st.sampled_from(self.live))
        if seq.num_uncomputed_tokens == 0:
            seq.output_token_ids.append(data.draw(st.integers(1, 3)))
        num_new = data.draw(st.integers(1, seq.num_uncomputed_tokens))
        if self.bm.can_append(seq, num_new):
            self.bm.append(seq, num_new)
            self._read(seq)
            self._run(seq, num_new)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data):
        seq = data.draw(st.sampled_from(self.live))
        self.live.remove(seq)
        self.bm.free(seq)

    @invariant()
    def blocks_consistent(self):
        check_blocks(self.bm, self.live)
        held = len({b for s in self.live for b in s.block_table})
        assert self.bm.num_free_blocks == 8 - held

    def _read(self, seq: Sequence) -> None:
        tokens = seq.all_token_ids
        for p in range(seq.num_computed_tokens):
            assert self.kv[slot(seq, p, 2)] == tuple(tokens[: p + 1])

    def _run(self, seq: Sequence, num_new: int) -> None:
        start, tokens = seq.num_computed_tokens, seq.all_token_ids
        for p in range(start, start + num_new):
            self.kv[slot(seq, p, 2)] = tuple(tokens[: p + 1])
        seq.num_computed_tokens += num_new
        self.bm.cache_blocks(seq, start)


TestBlockManagerMachine = BlockManagerMachine.TestCase
TestBlockManagerMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
