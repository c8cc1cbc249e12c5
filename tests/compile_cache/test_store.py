"""The store: round trips, damage detection and rebuild, failed builds, prefixes, closest."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from cache_helpers import BLOB_PATH as BLOB
from cache_helpers import CountingBuilder, flip_byte, key_and_factors, truncate

from compile_cache import Store, compute_key
from compile_cache import artifact as artifact_mod
from kiln.errors import KilnError


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "compile")
    yield store
    store.close()


def test_build_then_get_round_trips_files_and_manifest(store):
    key, factors = key_and_factors("tiny-llama", seed=3)
    builder = CountingBuilder()
    built, was_built = store.get_or_build(key, factors, builder)
    assert was_built and builder.calls == 1
    assert built.path == store.root / "artifacts" / key

    hit = store.get(key)
    assert hit is not None and hit.path == built.path
    assert hit.manifest == built.manifest
    assert hit.factors == {**factors, "cache_format": 1}
    assert hit.manifest["model"] == "tiny-llama" and hit.manifest["passes"] == ["FuseAddRMSNorm"]
    assert set(hit.manifest["files"]) == {"module.py", BLOB}
    assert hit.manifest["files"][BLOB]["size"] == 4096
    assert hit.file(BLOB).read_bytes() == built.file(BLOB).read_bytes()
    assert hit.size == 4096 + hit.file("module.py").stat().st_size
    on_disk = json.loads((hit.path / "manifest.json").read_text())
    assert on_disk["key"] == key and on_disk["build_seconds"] >= 0

    again, was_built = store.get_or_build(key, factors, builder)
    assert not was_built and builder.calls == 1 and again.path == hit.path


def test_miss_returns_none(store):
    key, _ = key_and_factors("absent")
    assert store.get(key) is None


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: flip_byte(p, 1234), "sha256 mismatch"),
        (lambda p: truncate(p, 100), "truncated"),
        (lambda p: p.unlink(), "missing"),
    ],
    ids=["flipped-byte", "truncated", "missing"],
)
def test_damaged_blob_is_detected_removed_and_rebuilt(store, caplog, damage, reason):
    key, factors = key_and_factors("tiny-llama", seed=5)
    builder = CountingBuilder()
    artifact, _ = store.get_or_build(key, factors, builder)
    damage(artifact.file(BLOB))

    with caplog.at_level(logging.WARNING, logger="compile_cache"):
        assert store.get(key) is None
    assert BLOB in caplog.text and reason in caplog.text
    assert not artifact.path.exists()

    rebuilt, was_built = store.get_or_build(key, factors, builder)
    assert was_built and builder.calls == 2
    assert store.get(key).manifest["build_id"] == rebuilt.manifest["build_id"]


def test_damaged_blob_found_inside_get_or_build_is_rebuilt(store):
    key, factors = key_and_factors("tiny-llama", seed=6)
    builder = CountingBuilder()
    artifact, _ = store.get_or_build(key, factors, builder)
    flip_byte(artifact.file(BLOB), 0)
    _, was_built = store.get_or_build(key, factors, builder)
    assert was_built and builder.calls == 2
    assert store.verify() == []


def test_unreadable_manifest_is_a_miss(store, caplog):
    key, factors = key_and_factors("tiny-llama", seed=7)
    artifact, _ = store.get_or_build(key, factors, CountingBuilder())
    (artifact.path / "manifest.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="compile_cache"):
        assert store.get(key, verify=False) is None
    assert "manifest.json" in caplog.text


def test_get_without_verify_skips_hashing(store):
    key, factors = key_and_factors("tiny-llama", seed=8)
    artifact, _ = store.get_or_build(key, factors, CountingBuilder())
    flip_byte(artifact.file(BLOB), 7)  # same size: only a hash finds it
    assert store.get(key, verify=False) is not None
    assert store.get(key, verify=True) is None


def test_failed_build_leaves_nothing_behind(store):
    key, factors = key_and_factors("tiny-llama", seed=9)

    def broken(staging):
        (staging / "half.bin").write_bytes(b"\x07" * 10)
        raise RuntimeError("lowering failed")

    with pytest.raises(RuntimeError, match="lowering failed"):
        store.get_or_build(key, factors, broken)
    assert store.get(key) is None
    assert list((store.root / "staging").iterdir()) == []
    assert store.ls() == []
    _, was_built = store.get_or_build(key, factors, CountingBuilder())
    assert was_built


@pytest.mark.parametrize(
    ("result", "error", "match"),
    [
        (None, TypeError, "return a manifest dict"),
        ({"files": []}, ValueError, r"store-owned fields \['files'\]"),
        ({"when": float("nan")}, ValueError, "NaN|JSON"),
    ],
)
def test_bad_builder_results_are_rejected_without_an_entry(store, result, error, match):
    key, factors = key_and_factors("tiny-llama", seed=10)
    with pytest.raises(error, match=match):
        store.get_or_build(key, factors, lambda staging: result)
    assert store.keys() == []


def test_a_builder_may_not_write_the_manifest(store):
    key, factors = key_and_factors("tiny-llama", seed=12)

    def writes_manifest(staging):
        (staging / "manifest.json").write_text("{}")
        return {}

    with pytest.raises(ValueError, match="the store owns it"):
        store.get_or_build(key, factors, writes_manifest)
    assert store.keys() == []


def test_key_must_match_factors(store):
    key, factors = key_and_factors("tiny-llama", seed=11)
    with pytest.raises(ValueError, match="not compute_key"):
        store.get_or_build(key, {**factors, "dtype": "float32"}, CountingBuilder())


def test_rm_by_unique_prefix_and_errors_for_unknown_or_ambiguous(store):
    keys = []
    for seed in range(17):  # 17 keys over 16 hex digits: two share a first digit
        key, factors = key_and_factors("m", seed=seed)
        store.get_or_build(key, factors, CountingBuilder(blob_size=16))
        keys.append(key)
    target = keys[0]
    assert store.rm(target[:10]) == target
    assert store.get(target) is None and target not in store.keys()
    with pytest.raises(KilnError, match="no compile cache entry with key 'nope'"):
        store.rm("nope")
    shared = next(k[0] for k in keys[1:] if sum(x[0] == k[0] for x in keys[1:]) > 1)
    with pytest.raises(KilnError, match="give more characters"):
        store.rm(shared)


def test_verify_reports_each_damaged_file_and_repair_removes(store):
    good, good_factors = key_and_factors("good", seed=12)
    bad, bad_factors = key_and_factors("bad", seed=13)
    store.get_or_build(good, good_factors, CountingBuilder())
    artifact, _ = store.get_or_build(bad, bad_factors, CountingBuilder())
    truncate(artifact.file(BLOB), 10)
    (artifact.file("module.py")).unlink()
    problems = store.verify()
    assert {(p.key, p.file) for p in problems} == {(bad, BLOB), (bad, "module.py")}
    assert store.keys() == sorted([good, bad])
    assert len(store.verify(repair=True)) == 2
    assert store.keys() == [good] and store.verify() == []


def test_closest_names_the_differing_factors(store):
    key, factors = key_and_factors("tiny-llama", seed=14)
    store.get_or_build(key, factors, CountingBuilder())
    other = {**factors, "dtype": "float32"}
    other_key = compute_key({**other, "versions": {"torch": "9"}})
    store.get_or_build(other_key, {**other, "versions": {"torch": "9"}}, CountingBuilder())

    wanted = {**factors, "versions": {"torch": "2.11.0", "kiln": "0.1.0"}}
    found_key, diffs = store.closest(wanted)
    assert found_key == key
    assert diffs == [("versions.torch", "2.13.0", "2.11.0")]
    assert Store(store.root.parent / "empty").closest(wanted) is None


def test_ls_rebuilds_a_lost_index_from_manifests(store):
    key, factors = key_and_factors("tiny-llama", seed=15)
    artifact, _ = store.get_or_build(key, factors, CountingBuilder(blob_size=333))
    store.close()
    shutil.rmtree(store.root / "index")
    (entry,) = store.ls()
    assert (entry.key, entry.model, entry.target) == (key, "tiny-llama", "cpu")
    assert entry.size == artifact.size and store.total_size() == artifact.size


@pytest.mark.parametrize(
    "offset", [0, 1000, 4095], ids=["first-piece", "middle-piece", "last-byte"]
)
def test_large_blob_is_verified_piece_by_piece(store, monkeypatch, offset):
    monkeypatch.setattr(artifact_mod, "PIECE", 1024)  # the blob spans 4 pieces
    key, factors = key_and_factors("tiny-llama", seed=9)
    artifact, _ = store.get_or_build(key, factors, CountingBuilder(blob_size=4096))
    entry = artifact.manifest["files"][BLOB]
    assert entry["piece"] == 1024 and len(entry["pieces"]) == 4
    assert store.get(key) is not None  # intact: every piece matches
    flip_byte(artifact.file(BLOB), offset)
    assert store.get(key) is None  # any piece, the last byte included, is checked


def test_measurements_stay_with_their_entry_until_it_goes(store):
    key, factors = key_and_factors("tiny-llama", seed=21)
    store.get_or_build(key, factors, CountingBuilder())
    assert store.measurement(key, "activation_peak/H200") is None
    store.record_measurement(key, "activation_peak/H200", 123)
    store.record_measurement(key, "activation_peak/H100", 456)
    assert store.get(key) is not None  # a hit rewrites the row's last use ...
    assert store.measurement(key, "activation_peak/H200") == 123  # ... and keeps the rest
    assert store.measurement(key, "activation_peak/H100") == 456
    (entry,) = store.ls()
    assert entry.key == key
    store.rm(key)
    store.get_or_build(key, factors, CountingBuilder())  # rebuilt: measured afresh
    assert store.measurement(key, "activation_peak/H200") is None


def test_a_measurement_of_an_unknown_entry_is_not_kept(store):
    key, _ = key_and_factors("elsewhere", seed=22)
    store.record_measurement(key, "activation_peak/H200", 1)
    assert store.measurement(key, "activation_peak/H200") is None
    assert store.ls() == []
