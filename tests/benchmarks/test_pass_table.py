"""benchmarks/pass_table.py on the demo model: the default first and again last, a variant whose
post-pass graph is the default's reuses its row instead of compiling, the others compile under
the lowering asked and are measured on the artifact they built. Compiles and measures are
stubbed (a CPU compile takes minutes); the captures that decide "same graph" are real."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from benchmarks import pass_table
from model_defs.registry import resolve_model_path


def bench_rows(itl: float) -> list[dict]:
    """What `measure` returns: decode at batch 1 and 32, then the prefill."""
    decode = dict(input_len=pass_table.DECODE["input_len"], output_len=64, ttft_p50_ms=3.0)
    prefill = dict(input_len=pass_table.PREFILL["input_len"], output_len=2, itl_p50_ms=None)
    return [
        {"engine": "kiln", "batch_size": 1, "tok_s": 100.0, "itl_p50_ms": itl, **decode},
        {"engine": "kiln", "batch_size": 32, "tok_s": 900.0, "itl_p50_ms": 2 * itl, **decode},
        {"engine": "kiln", "batch_size": 1, "tok_s": 50.0, "ttft_p50_ms": 40 * itl, **prefill},
    ]


@pytest.fixture(scope="module")
def demo() -> Path:
    return resolve_model_path("demo")


def test_run_group_reuses_only_a_variant_whose_graph_is_the_default(demo, monkeypatch):
    """The stubbed default compile claims no pass rewrote anything, so every variant is a
    candidate for reuse and the captures alone decide."""
    compiled, measured = [], []

    def compile_variant(config, lowering):
        compiled.append((config.passes, lowering))
        toggled = pass_table.toggled_passes("bf16", None)
        manifest = {"passes": [{"name": n, "rewrites": 0} for n in toggled]}
        path = f"/artifacts/{config.passes or 'default'}"
        return 12.0, types.SimpleNamespace(path=Path(path), manifest=manifest)

    def measure(config):
        measured.append(config.artifact)
        return bench_rows(1.0 + len(measured))  # every measure its own figures

    monkeypatch.setattr(pass_table, "compile_variant", compile_variant)
    monkeypatch.setattr(pass_table, "measure", measure)
    rows = pass_table.run_group(demo, "bf16", "plan", lambda row: None)
    toggled = pass_table.toggled_passes("bf16", None)
    assert [r["passes"] for r in rows] == ["default", *(f"-{p}" for p in toggled), "default"]
    default, *variants, again = rows
    reused = {r["passes"][1:] for r in variants if r["graph"] == "same graph"}
    # A Llama has no q/k norm to fuse; its residual adds do fuse into the norms.
    assert "fuse_qk_norm_rope" in reused and "fuse_add_rms_norm" not in reused
    changed = [p for p in toggled if p not in reused]
    assert compiled == [(None, "plan")] + [(f"-{p}", "plan") for p in changed]
    assert measured == ["/artifacts/default", *(f"/artifacts/-{p}" for p in changed),
                        "/artifacts/default"]  # fmt: skip
    for row in variants:
        assert (row["bench"] == default["bench"]) == (row["passes"][1:] in reused)
        assert (row["compile_s"] is None) == (row["passes"][1:] in reused)
    assert again["graph"] == "cached" and again["itl_bs1_ms"] != default["itl_bs1_ms"]
    assert default["itl_bs1_ms"] == 2.0 and default["prefill_ms"] == 80.0


def test_plan_lowering_is_refused_without_a_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    with pytest.raises(SystemExit):
        pass_table.parse_args(["--lowering", "plan"])
    assert "has none" in capsys.readouterr().err
    opts = pass_table.parse_args(["--groups", "bf16"])
    assert (opts.lowering, opts.groups, opts.repeat_default) == ("piecewise", ["bf16"], True)
