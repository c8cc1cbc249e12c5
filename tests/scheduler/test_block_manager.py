"""BlockManager: allocation, refcounts, prefix hits, LRU reuse of cached blocks."""

from __future__ import annotations

import random

import pytest
from scheduler_sim import check_blocks

from scheduler import BlockManager, Sequence

BS = 4


def make_seq(seq_id: str, tokens: list[int]) -> Sequence:
    return Sequence(seq_id, tokens, max_tokens=8)


def compute(bm: BlockManager, seq: Sequence, num_new: int | None = None) -> None:
    """Admit (if needed) and run `num_new` tokens (default: all), as scheduler + runner would."""
    if num_new is None:
        num_new = seq.num_uncomputed_tokens
    if not seq.block_table:
        bm.allocate(seq, min(num_new, seq.num_tokens - bm.num_cached_tokens(seq)))
        num_new = min(num_new, seq.num_uncomputed_tokens)
    else:
        bm.append(seq, num_new)
    start = seq.num_computed_tokens
    seq.num_computed_tokens += num_new
    bm.cache_blocks(seq, start)


def rand_tokens(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, 1000) for _ in range(n)]


def test_allocate_takes_ceil_blocks_and_free_returns_them():
    bm = BlockManager(num_blocks=10, block_size=BS)
    seq = make_seq("a", rand_tokens(9))
    assert bm.can_allocate(seq, 9)
    bm.allocate(seq, 9)
    assert len(seq.block_table) == 3 and bm.num_free_blocks == 7
    assert bm.usage == pytest.approx(0.3)
    check_blocks(bm, [seq])
    bm.free(seq)
    assert seq.block_table == [] and bm.num_free_blocks == 10 and bm.usage == 0.0
    check_blocks(bm, [])


def test_can_allocate_refuses_more_than_free():
    bm = BlockManager(num_blocks=3, block_size=BS)
    seq = make_seq("a", rand_tokens(13))
    assert not bm.can_allocate(seq, 13)  # needs 4 blocks
    assert bm.can_allocate(seq, 12)  # a 12-token chunk needs 3


def test_append_adds_a_block_only_when_the_last_one_is_full():
    bm = BlockManager(num_blocks=4, block_size=BS)
    seq = make_seq("a", rand_tokens(4))
    compute(bm, seq)
    assert len(seq.block_table) == 1
    seq.output_token_ids.append(7)
    assert bm.max_appendable(seq) == 3 * BS
    bm.append(seq, 1)
    assert len(seq.block_table) == 2
    seq.num_computed_tokens += 1
    seq.output_token_ids.append(8)
    bm.append(seq, 1)  # position 5 still fits block 2
    assert len(seq.block_table) == 2


def test_prefix_hit_shares_full_blocks_and_counts_hits():
    bm = BlockManager(num_blocks=10, block_size=BS)
    prefix = rand_tokens(8, seed=1)
    a = make_seq("a", prefix + [5, 6, 7])
    compute(bm, a)
    b = make_seq("b", prefix + [9])
    assert bm.num_cached_tokens(b) == 8
    bm.allocate(b, 1)
    assert b.block_table[:2] == a.block_table[:2]
    assert b.num_cached_tokens == b.num_computed_tokens == 8
    assert bm.blocks[a.block_table[0]].ref_count == 2
    assert (bm.num_prefix_hits, bm.num_prefix_queries) == (8, 11 + 9)
    assert bm.prefix_hit_rate == pytest.approx(8 / 20)
    check_blocks(bm, [a, b])


def test_hit_leaves_at_least_one_token_to_compute():
    bm = BlockManager(num_blocks=10, block_size=BS)
    tokens = rand_tokens(8, seed=2)
    compute(bm, make_seq("a", tokens))
    twin = make_seq("b", tokens)  # fully cached, but its last token must run for logits
    assert bm.num_cached_tokens(twin) == 4


def test_hash_registered_only_after_kv_is_computed():
    bm = BlockManager(num_blocks=10, block_size=BS)
    tokens = rand_tokens(9, seed=3)
    a = make_seq("a", tokens)
    bm.allocate(a, 9)  # scheduled, not yet run
    assert bm.num_cached_tokens(make_seq("b", tokens)) == 0
    a.num_computed_tokens = 9
    bm.cache_blocks(a, 0)
    assert bm.num_cached_tokens(make_seq("c", tokens)) == 8


def test_freed_cached_blocks_stay_findable_and_are_revived():
    bm = BlockManager(num_blocks=4, block_size=BS)
    tokens = rand_tokens(9, seed=4)
    a = make_seq("a", tokens)
    compute(bm, a)
    old = list(a.block_table)
    bm.free(a)
    assert bm.usage == 0.0 and len(bm.cached_free) == 2
    b = make_seq("b", tokens)
    assert bm.can_allocate(b, 1)
    bm.allocate(b, 1)
    assert b.block_table[:2] == old[:2] and b.num_cached_tokens == 8
    check_blocks(bm, [b])


def test_fresh_blocks_come_from_uncached_first_then_lru_tail_first():
    bm = BlockManager(num_blocks=5, block_size=BS)
    a = make_seq("a", rand_tokens(12, seed=5) + [1])
    compute(bm, a)  # 4 blocks, 3 full and cached
    cached = a.block_table[:3]
    bm.free(a)
    b = make_seq("b", rand_tokens(8, seed=6))
    bm.allocate(b, 8)  # uses the 2 never-cached blocks first
    assert not set(b.block_table) & set(cached) and len(bm.cached_free) == 3
    c = make_seq("c", rand_tokens(4, seed=7))
    bm.allocate(c, 4)  # must evict: the tail of a's prefix goes first
    assert c.block_table == [cached[2]]
    assert bm.num_cached_tokens(make_seq("d", a.all_token_ids)) == 8
    check_blocks(bm, [b, c])


def test_hash_collision_with_different_tokens_is_not_a_hit():
    bm = BlockManager(num_blocks=6, block_size=BS)
    a = make_seq("a", rand_tokens(5, seed=8))
    compute(bm, a)
    b = make_seq("b", rand_tokens(5, seed=9))
    forged = bm._hashes(b)[0]
    bm.hash_to_block[forged] = a.block_table[0]  # as if hashes collided
    assert bm.num_cached_tokens(b) == 0


def test_equal_blocks_computed_twice_keep_one_entry():
    bm = BlockManager(num_blocks=6, block_size=BS)
    tokens = rand_tokens(5, seed=10)
    a, b = make_seq("a", tokens), make_seq("b", tokens)
    bm.allocate(a, 5)
    bm.allocate(b, 5)  # same step: neither is cached yet
    for seq in (a, b):
        seq.num_computed_tokens = 5
        bm.cache_blocks(seq, 0)
    assert bm.hash_to_block[bm._hashes(a)[0]] == a.block_table[0]
    assert bm.blocks[b.block_table[0]].hash is None
    bm.free(a)
    bm.free(b)
    check_blocks(bm, [])
    assert bm.num_free_blocks == 6


def test_disabled_prefix_caching_never_hits():
    bm = BlockManager(num_blocks=6, block_size=BS, enable_prefix_caching=False)
    tokens = rand_tokens(9, seed=11)
    compute(bm, make_seq("a", tokens))
    assert bm.num_cached_tokens(make_seq("b", tokens)) == 0
    assert bm.hash_to_block == {}


def test_double_free_is_caught():
    bm = BlockManager(num_blocks=4, block_size=BS)
    seq = make_seq("a", rand_tokens(5))
    bm.allocate(seq, 5)
    table = list(seq.block_table)
    bm.free(seq)
    seq.block_table = table
    with pytest.raises(AssertionError, match="freed twice"):
        bm.free(seq)
