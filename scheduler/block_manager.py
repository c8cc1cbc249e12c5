"""Paged KV blocks: reference counts, prefix caching by chained block hashes, LRU reuse.

A block is in exactly one of three states:
- in use: ref_count > 0, listed in the block_table of every running sequence that holds it;
- free and cached: ref_count == 0 with a hash, in `cached_free` (LRU first), still findable by
  prefix lookup until its memory is needed;
- free: ref_count == 0 without a hash, in `free_ids`.
Fresh blocks come from `free_ids` first, so cached contents are evicted only when necessary.
A block's hash is registered only once its KV has been computed (`cache_blocks`), so a prefix
hit never points at KV that a forward has not written yet.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from scheduler.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()  # the block's tokens, to reject hash collisions


class _Blocks:
    """The pool's block records, each made on first use: a fresh block is ref_count 0 with no
    hash, so untouched ones need no object: a 460k-block pool (1B model on an H200) costs
    0.41 s to build eagerly, on the start-up's critical path."""

    def __init__(self, num_blocks: int):
        self._num_blocks = num_blocks
        self._made: dict[int, Block] = {}

    def __len__(self) -> int:
        return self._num_blocks

    def __getitem__(self, block_id: int) -> Block:
        block = self._made.get(block_id)
        if block is None:
            if not 0 <= block_id < self._num_blocks:
                raise IndexError(f"block {block_id} is outside the pool of {self._num_blocks}")
            block = self._made[block_id] = Block(block_id)
        return block

    def __iter__(self):
        return (self[i] for i in range(self._num_blocks))


class BlockManager:
    """Hands out KV blocks to sequences and shares full blocks with equal prefixes."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = _Blocks(num_blocks)
        self.free_ids: deque[int] = deque(range(num_blocks))
        self.cached_free: OrderedDict[int, None] = OrderedDict()
        self.hash_to_block: dict[int, int] = {}
        self.num_prefix_queries = 0  # tokens of admitted sequences looked up in the cache
        self.num_prefix_hits = 0  # of those, tokens whose KV was found

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_ids) + len(self.cached_free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by running sequences (cached-but-free blocks count as free)."""
        return 1.0 - self.num_free_blocks / len(self.blocks)

    @property
    def prefix_hit_rate(self) -> float:
        return self.num_prefix_hits / self.num_prefix_queries if self.num_prefix_queries else 0.0

    def num_cached_tokens(self, seq: Sequence) -> int:
        """Tokens of `seq` an admission would take from the cache (always leaves one to run)."""
        return len(self._cached_prefix(seq)) * self.block_size

    def can_allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Whether `seq` can be admitted to run `num_new_tokens` past its cached prefix."""
        prefix = self._cached_prefix(seq)
        num_revived = sum(1 for b in prefix if self.blocks[b].ref_count == 0)
        num_fresh = self._num_blocks_for(len(prefix) * self.block_size + num_new_tokens)
        return num_fresh - len(prefix) + num_revived <= self.num_free_blocks

    def allocate(self, seq: Sequence, num_new_tokens: int) -> None:
        """Admit `seq`: share its cached prefix blocks, then add blocks for `num_new_tokens`."""
        assert not seq.block_table, f"{seq.seq_id} already holds blocks"
        prefix = self._cached_prefix(seq)
        for block_id in prefix:
            self._ref(block_id)
        seq.block_table = list(prefix)
        seq.num_cached_tokens = seq.num_computed_tokens = len(prefix) * self.block_size
        self.num_prefix_queries += seq.num_tokens
        self.num_prefix_hits += seq.num_cached_tokens
        self.append(seq, num_new_tokens)

    def max_appendable(self, seq: Sequence) -> int:
        """How many tokens past the computed ones `seq` could run with the blocks left."""
        num_slots = (len(seq.block_table) + self.num_free_blocks) * self.block_size
        return num_slots - seq.num_computed_tokens

    def can_append(self, seq: Sequence, num_new_tokens: int = 1) -> bool:
        return self.max_appendable(seq) >= num_new_tokens

    def append(self, seq: Sequence, num_new_tokens: int = 1) -> None:
        """Make room for positions [num_computed_tokens, num_computed_tokens + num_new_tokens)."""
        num_needed = self._num_blocks_for(seq.num_computed_tokens + num_new_tokens)
        while len(seq.block_table) < num_needed:
            seq.block_table.append(self._take_free())

    def cache_blocks(self, seq: Sequence, start: int) -> None:
        """Register the blocks that became full of computed KV since position `start`."""
        if not self.enable_prefix_caching:
            return
        hashes = self._hashes(seq)
        tokens = seq.all_token_ids
        bs = self.block_size
        for i in range(start // bs, seq.num_computed_tokens // bs):
            block = self.blocks[seq.block_table[i]]
            # An equal block computed by another sequence keeps its entry; this one stays private.
            if block.hash is None and hashes[i] not in self.hash_to_block:
                block.hash = hashes[i]
                block.token_ids = tuple(tokens[i * bs : (i + 1) * bs])
                self.hash_to_block[block.hash] = block.block_id

    def free(self, seq: Sequence) -> None:
        """Drop `seq`'s references; its cached blocks stay findable until evicted."""
        # Tail blocks first, so LRU eviction takes a prefix's end before its shared start.
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            assert block.ref_count > 0, f"block {block_id} freed twice"
            block.ref_count -= 1
            if block.ref_count == 0 and block.hash is None:
                self.free_ids.append(block_id)
            elif block.ref_count == 0:
                self.cached_free[block_id] = None
        seq.block_table = []

    def _num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _hashes(self, seq: Sequence) -> list[int]:
        """Chained hashes of `seq`'s full blocks: hash((parent_hash, block tokens))."""
        hashes, bs = seq.block_hashes, self.block_size
        num_full = seq.num_tokens // bs
        if len(hashes) < num_full:
            tokens = seq.all_token_ids
            parent = hashes[-1] if hashes else None
            for i in range(len(hashes), num_full):
                parent = hash((parent, tuple(tokens[i * bs : (i + 1) * bs])))
                hashes.append(parent)
        return hashes

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids of the longest cached run of `seq`'s full blocks, leaving >= 1 token."""
        if not self.enable_prefix_caching:
            return []
        num_max = (seq.num_tokens - 1) // self.block_size  # logits need one token to run
        tokens, bs, found = seq.all_token_ids, self.block_size, []
        for i, h in enumerate(self._hashes(seq)[:num_max]):
            block_id = self.hash_to_block.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tuple(
                tokens[i * bs : (i + 1) * bs]
            ):
                break
            found.append(block_id)
        return found

    def _ref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.cached_free[block_id]  # revived from the cache
        block.ref_count += 1

    def _take_free(self) -> int:
        """A fresh block: a never-cached one if any, else evict the least recently used."""
        if self.free_ids:
            block = self.blocks[self.free_ids.popleft()]
        else:
            block = self.blocks[self.cached_free.popitem(last=False)[0]]
            del self.hash_to_block[block.hash]
            block.hash, block.token_ids = None, ()
        block.ref_count = 1
        return block.block_id
