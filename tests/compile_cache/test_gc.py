"""Eviction: least recently used first, down to the limit; entries being built are kept."""

from __future__ import annotations

import time

import pytest
from cache_helpers import CountingBuilder, key_and_factors

from compile_cache import Store
from compile_cache.locks import key_lock


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "compile")
    yield store
    store.close()


def fill(store: Store, count: int, blob_size: int) -> list[str]:
    keys = []
    for seed in range(count):
        key, factors = key_and_factors(f"model-{seed}", seed=seed)
        store.get_or_build(key, factors, CountingBuilder(blob_size=blob_size, seed=seed))
        keys.append(key)
        time.sleep(0.01)  # distinct last-used times
    return keys


def test_gc_evicts_least_recently_used_until_under_limit(store):
    keys = fill(store, 4, blob_size=1000)
    entry_size = store.ls()[0].size
    assert store.get(keys[0]) is not None  # the oldest becomes the most recently used
    removed = store.gc(max_size_bytes=2 * entry_size + 1)
    assert removed == [keys[1], keys[2]]
    assert store.keys() == sorted([keys[0], keys[3]])
    assert store.total_size() <= 2 * entry_size + 1
    assert [e.key for e in store.ls()] == [keys[0], keys[3]]  # most recently used first


def test_gc_under_limit_removes_nothing_and_zero_empties(store):
    keys = fill(store, 3, blob_size=500)
    total = store.total_size()
    assert store.gc(total) == []
    assert set(store.gc(0)) == set(keys)
    assert store.ls() == [] and store.total_size() == 0


def test_gc_skips_an_entry_whose_key_is_locked(store):
    keys = fill(store, 2, blob_size=500)
    with key_lock(store.locks_dir, keys[0]):
        removed = store.gc(0)
    assert removed == [keys[1]] and store.keys() == [keys[0]]


def test_gc_deletes_staging_left_by_a_dead_build_but_not_a_live_one(store):
    dead, live = "d" * 64, "e" * 64
    for key in (dead, live):
        (store.staging_dir / f"{key}.x1").mkdir(parents=True)
        (store.staging_dir / f"{key}.x1" / "part.bin").write_bytes(b"\x09" * 8)
    with key_lock(store.locks_dir, live):
        store.gc(10**9)
    assert [p.name for p in store.staging_dir.iterdir()] == [f"{live}.x1"]


def test_gc_rejects_negative_size(store):
    with pytest.raises(ValueError, match="max_size_bytes=-1"):
        store.gc(-1)
