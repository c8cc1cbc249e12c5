"""The GPU's own-target artifact (AOTInductor package with the Triton attention kernel called
from it) against the eager reference engine, CUDA graphs on: a mixed prefill, then two decode
geometries replayed from captured graphs (GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_compile_check import compare, run_steps

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]
KW = dict(gpu_memory_utilization=0.2, max_model_len=512)


def compile_demo(dtype: str, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "kiln", "compile", "demo", "--target", "auto", "--dtype", dtype,
         "--no-record", *extra],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def compiled_rows(keep: dict | None = None, **kw) -> list:
    """The cached artifact's logits rows, after checking it is what runs (graphs included)."""
    loaded = keep if keep is not None else {}
    rows = run_steps(dict(model="demo", compile="cached", **kw) | KW, keep=loaded)
    assert loaded["artifact_key"] and loaded["graphs"], loaded
    return rows


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-3), ("bfloat16", 2e-2)])
def test_compiled_matches_reference_with_graphs(dtype, tol):
    out = compile_demo(dtype)
    assert "(plan)" in out.splitlines()[0], out  # the default GPU lowering
    ref = run_steps(dict(model="demo", compile="never", dtype=dtype) | KW)
    loaded = {}
    got = compare(compiled_rows(keep=loaded, dtype=dtype), ref)
    assert got["rel_err_max"] <= tol, got
    # attention is compiled into the package, so only the first graph bucket was warmed up
    # and the decode rows above replayed graphs captured without their own warm-up
    assert loaded["warm_every_bucket"] is False, loaded


def test_fp8_compiled_runs_under_graphs_and_matches_the_quantized_graph():
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs sm_89 or newer")
    compile_demo("bfloat16", "--quantization", "fp8")
    fp8 = dict(dtype="bfloat16", quantization="fp8")
    got = compiled_rows(**fp8)
    eager_fp8 = run_steps(dict(model="demo", compile="never", passes="") | fp8 | KW)
    unquantized = run_steps(dict(model="demo", compile="never", dtype="bfloat16") | KW)
    # Lowering must not change what the quantized graph computes (cosine of logits) ...
    assert compare(got, eager_fp8)["cosine_min"] >= 0.99, compare(got, eager_fp8)
    # ... and quantization costs what it costs eagerly: 0.970 on the CPU for the demo's wide
    # random weights (the tiny Llama and Qwen3 checkpoints reach 0.99).
    assert compare(got, unquantized)["cosine_min"] >= 0.95, compare(got, unquantized)


def test_second_load_reuses_the_measured_activation_peak():
    """The first load of an artifact on this GPU measures its warm-up step's activation peak
    and keeps it with the cache entry; a second load sizes the KV cache from that figure and
    skips the step, then still computes the same logits."""
    from compile_cache import Store

    compile_demo("bfloat16")  # a cache hit after the test above
    args = dict(model="demo", compile="cached", dtype="bfloat16") | KW
    store = Store()
    for key in store.keys():  # forget what earlier loads measured
        record = store.index[key]
        store.index[key] = {k: v for k, v in record.items() if k != "measured"}
    first, second = {}, {}
    rows = run_steps(args, keep=first)
    kept = [r.get("measured", {}) for r in (store.index[k] for k in store.keys())]
    assert any(v == first["activation_peak_bytes"] for m in kept for v in m.values()), kept
    assert first["activation_peak_bytes"] > 0
    again = run_steps(args, keep=second)
    assert second["activation_peak_bytes"] == first["activation_peak_bytes"]
    # skipping the step shows in the phase: no forward ran inside it
    assert second["warm_load_phases"]["warmup"] < first["warm_load_phases"]["warmup"]
    assert compare(again, rows)["rel_err_max"] <= 1e-5


def test_fp8_artifact_runs_every_op_in_graph_and_holds_the_kernels_it_names():
    """The dispatch truth on the device: the manifest's per-op table names only kernels the
    AOTInductor package contains (cubins carry their entry symbol), and no op is left to
    the reference on an fp8 GPU."""
    import json
    import zipfile

    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs sm_89 or newer")
    report = json.loads(compile_demo("bfloat16", "--quantization", "fp8", "--json"))
    manifest = report["manifest"]
    rows = manifest["ops"]
    assert all(r["runs"] == "in graph" for r in rows), rows
    assert {r["implementation"] for r in rows} >= {"helion", "triton"}, rows
    # scaled_mm: the small-M kernel and torch._scaled_mm, one torch.cond branch each
    gemm = next(r for r in rows if r["op"] == "scaled_mm")
    assert gemm["implementation"] == "triton", gemm
    assert {"_scaled_mm_small_m_kernel", "aten._scaled_mm"} <= set(gemm["kernels"]), gemm
    pieces = manifest.get("pieces", {}).values()  # piecewise: one package per distinct piece
    packages = [manifest["package"]] if "package" in manifest else [p["package"] for p in pieces]
    blob = b""
    for package in packages:
        with zipfile.ZipFile(Path(report["artifact"]) / package) as z:
            blob += b"".join(z.read(n) for n in z.namelist())
    assert b"kiln_triton::" not in blob  # the kernel's op was compiled in, not left as a call
    for row in rows:
        for name in row["kernels"]:
            symbol = "_scaled_mm" if name == "aten._scaled_mm" else name
            assert symbol.encode() in blob, (row["op"], name)
