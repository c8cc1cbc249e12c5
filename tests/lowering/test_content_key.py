"""The cache key is the content that determines the artifact (lowering/lookup.py).

The lowering step is replaced by a builder that writes one file: these tests are about which
compiles hit and which miss, and whether a hit captured the model (it must not)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hf_models import make_checkpoint

# intermediate and vocab are multiples of 64: the padding pass derives no weights.
PLAIN = dict(intermediate_size=128, vocab_size=320)
PADDED = dict(intermediate_size=160, vocab_size=320)  # zero-padded MLP weights are embedded


@pytest.fixture
def compiles(tmp_path, monkeypatch):
    """compile(ckpt, **options) -> CompileResult, counting captures and lowerings."""
    import lowering.compile as compile_mod
    import lowering.lowered as lowered
    from compile_cache import Store
    from lowering.compile import CompileOptions, compile_model

    counts = {"capture": 0, "lower": 0}
    real_capture = compile_mod._capture

    def counted_capture(*args, **kwargs):
        counts["capture"] += 1
        return real_capture(*args, **kwargs)

    def fake_lower(passed, model, target, staging, options, progress=None, ahead=None):
        counts["lower"] += 1
        (staging / "graph.txt").write_text(passed.gm.code)
        return {"impls": {}, "manifest": {"lowering": "test", "vocab_size": passed.vocab_size}}

    monkeypatch.setattr(compile_mod, "_capture", counted_capture)
    monkeypatch.setattr(lowered, "lower", fake_lower)
    store = Store(tmp_path / "compile")  # what `--cache-dir tmp_path` opens

    def run(ckpt: Path, **options):
        opts = CompileOptions(model=str(ckpt), target=options.pop("target", "cpu"), **options)
        return compile_model(opts, store, progress=lambda m: None)

    run.counts, run.store = counts, store
    return run


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two checkpoints of one config with other weights, and one whose MLP gets padded."""
    root = tmp_path_factory.mktemp("ckpts")
    make_checkpoint(root / "a", "llama", seed=1, **PLAIN)
    make_checkpoint(root / "b", "llama", seed=2, **PLAIN)
    make_checkpoint(root / "pa", "llama", seed=1, **PADDED)
    make_checkpoint(root / "pb", "llama", seed=2, **PADDED)
    return root


def test_other_weights_of_one_config_hit_without_capture(compiles, checkpoints):
    first = compiles(checkpoints / "a")
    assert first.built and compiles.counts == {"capture": 1, "lower": 1}
    second = compiles(checkpoints / "b")
    assert not second.built and second.key == first.key
    assert compiles.counts == {"capture": 1, "lower": 1}  # the alias led there: no capture


def test_touch_of_the_weights_hits(compiles, checkpoints):
    first = compiles(checkpoints / "a")
    weights = checkpoints / "a" / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = compiles(checkpoints / "a")
    assert not again.built and again.key == first.key and compiles.counts["capture"] == 1


def test_embedded_weights_key_on_their_content(compiles, checkpoints):
    first = compiles(checkpoints / "pa")
    assert first.artifact.factors["weights"] != "not embedded"
    weights = checkpoints / "pa" / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = compiles(checkpoints / "pa")
    assert not touched.built and touched.key == first.key and compiles.counts["capture"] == 1
    other = compiles(checkpoints / "pb")
    assert other.built and other.key != first.key
    from compile_cache import diff_factors

    assert [p for p, _, _ in diff_factors(first.artifact.factors, other.artifact.factors)] == [
        "weights"
    ]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"passes": "-fuse_add_rms_norm"}, "pass_toggles"),
        ({"dtype": "bfloat16"}, "dtype"),
        ({"target": "h100"}, "target.name"),
    ],
)
def test_changed_factor_misses_and_explain_names_it(compiles, checkpoints, capsys, options, named):
    base = compiles(checkpoints / "a")
    changed = compiles(checkpoints / "a", **options)
    assert changed.built and changed.key != base.key
    from kiln.cli import main

    capsys.readouterr()
    cache_dir = str(compiles.store.root.parent)
    assert main(["cache", "--cache-dir", cache_dir, "explain", base.key, "--vs", changed.key]) == 0
    out = capsys.readouterr().out
    assert f"  {named}:" in out, out


def test_code_hash_ignores_comments_and_docstrings_only(tmp_path):
    from lowering.lookup import _normalized_source

    def norm(text: str) -> str:
        f = tmp_path / "m.py"
        f.write_text(text)
        return _normalized_source(f)

    base = norm('def f(x):\n    """Doc."""\n    return x + 1\n')
    assert norm('def f(x):\n    """Other doc."""\n    # why\n    return x + 1  # note\n') == base
    assert norm("def f(x):\n    return x + 1\n") == base
    assert norm("def f(x):\n    return x + 2\n") != base


def test_code_hash_covers_the_code_generator_not_the_server():
    from lowering.lookup import CODEGEN_DIRS, GRAPH_DIRS

    assert {"ir", "passes", "lowering", "kiln/config.py"} <= set(CODEGEN_DIRS)
    assert GRAPH_DIRS == ("model_defs",)
    assert not {"server", "docs", "runtime", "kiln", "scheduler"} & set(CODEGEN_DIRS + GRAPH_DIRS)
