"""`kiln cache` verbs through `kiln.cli.main`: output and exit codes."""

from __future__ import annotations

import json

import pytest
from cache_helpers import BLOB_PATH, CountingBuilder, flip_byte, key_and_factors

from compile_cache import Store, compute_key
from kiln.cli import main


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "kiln"


@pytest.fixture
def keys(cache_dir):
    """Two entries differing in dtype and the torch version."""
    store = Store(cache_dir / "compile")
    key_a, factors_a = key_and_factors("tiny-llama", seed=31)
    factors_b = {**factors_a, "dtype": "float32", "versions": {"torch": "2.11.0", "kiln": "0.1.0"}}
    key_b = compute_key(factors_b)
    store.get_or_build(key_a, factors_a, CountingBuilder(blob_size=2048))
    store.get_or_build(key_b, factors_b, CountingBuilder(blob_size=1024))
    store.close()
    return key_a, key_b


def kiln_cache(cache_dir, *argv):
    return main(["cache", "--cache-dir", str(cache_dir), *argv])


def test_ls_prints_a_table_and_json(cache_dir, keys, capsys):
    assert kiln_cache(cache_dir, "ls") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "KEY",
        "MODEL",
        "TARGET",
        "SIZE",
        "CREATED",
        "LAST",
        "USED",
    ]
    for key in keys:
        assert key[:12] in out
    assert "tiny-llama" in out and "2 entries" in out

    assert kiln_cache(cache_dir, "ls", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["key"] for r in rows} == set(keys)
    assert {r["model"] for r in rows} == {"tiny-llama"}
    assert all(r["size"] > 1024 and r["created"].endswith("+00:00") for r in rows)


def test_ls_on_an_empty_cache(cache_dir, capsys):
    assert kiln_cache(cache_dir, "ls") == 0
    assert "no entries" in capsys.readouterr().out


def test_cache_dir_option_also_after_the_verb(cache_dir, keys, capsys):
    assert main(["cache", "ls", "--json", "--cache-dir", str(cache_dir)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_explain_prints_factors_by_path(cache_dir, keys, capsys):
    assert kiln_cache(cache_dir, "explain", keys[0][:8]) == 0
    out = capsys.readouterr().out
    assert f"key      {keys[0]}" in out
    assert '  versions.torch = "2.13.0"' in out and "  cache_format = 1" in out
    assert "target cpu" in out


def test_explain_vs_prints_only_differing_paths(cache_dir, keys, capsys):
    assert kiln_cache(cache_dir, "explain", keys[0], "--vs", keys[1][:10]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{keys[0][:12]} vs {keys[1][:12]}: 2 factors differ"
    assert lines[1:] == [
        f'  dtype: "{key_and_factors("tiny-llama", seed=31)[1]["dtype"]}" -> "float32"',
        '  versions.torch: "2.13.0" -> "2.11.0"',
    ]


@pytest.mark.parametrize(
    "argv",
    [["explain", "0badc0de"], ["explain", "{k}", "--vs", "0badc0de"], ["rm", "0badc0de"]],
)
def test_unknown_key_is_a_clear_error(cache_dir, keys, capsys, argv):
    argv = [a.format(k=keys[0]) for a in argv]
    assert kiln_cache(cache_dir, *argv) == 2
    err = capsys.readouterr().err
    assert "no compile cache entry with key '0badc0de'" in err and "kiln cache ls" in err


def test_verify_exit_code_follows_damage(cache_dir, keys, capsys):
    assert kiln_cache(cache_dir, "verify") == 0
    assert "ok: 2 entries verified" in capsys.readouterr().out

    flip_byte(cache_dir / "compile" / "artifacts" / keys[1] / BLOB_PATH, 99)
    assert kiln_cache(cache_dir, "verify") == 1
    out = capsys.readouterr().out
    assert f"damaged: {keys[1][:12]}: {BLOB_PATH}: sha256 mismatch" in out
    assert kiln_cache(cache_dir, "verify", "--repair") == 1
    assert kiln_cache(cache_dir, "verify") == 0


def test_gc_with_a_size_evicts_lru(cache_dir, keys, capsys):
    assert kiln_cache(cache_dir, "gc", "--max-size", "3K") == 0
    assert "removed 1 entry (" in capsys.readouterr().out
    assert Store(cache_dir / "compile").keys() == [keys[1]]  # the older entry went
    assert kiln_cache(cache_dir, "gc", "--max-size", "0") == 0
    assert Store(cache_dir / "compile").keys() == []


@pytest.mark.parametrize("size", ["lots", "2X", "-1G"])
def test_gc_bad_size_is_a_clear_error(cache_dir, keys, capsys, size):
    assert kiln_cache(cache_dir, "gc", f"--max-size={size}") == 2
    err = capsys.readouterr().err
    assert f"bad size '{size}'" in err and "500M" in err
    assert len(Store(cache_dir / "compile").keys()) == 2


def test_rm_removes_by_prefix(cache_dir, keys, capsys):
    assert kiln_cache(cache_dir, "rm", keys[0][:12]) == 0
    assert f"removed {keys[0]}" in capsys.readouterr().out
    assert Store(cache_dir / "compile").keys() == [keys[1]]


def test_rm_checks_every_key_before_removing_any(cache_dir, keys, capsys):
    assert kiln_cache(cache_dir, "rm", keys[0], "0badc0de") == 2
    assert len(Store(cache_dir / "compile").keys()) == 2


def test_kiln_cache_dir_env_is_the_default(cache_dir, keys, capsys, monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", str(cache_dir))
    assert main(["cache", "ls", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
