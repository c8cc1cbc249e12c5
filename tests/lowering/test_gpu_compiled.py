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
from runtime.engine import Engine

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


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-3), ("bfloat16", 3e-2)])
def test_compiled_matches_reference_with_graphs(dtype, tol):
    out = compile_demo(dtype)
    assert "(aoti)" in out.splitlines()[0], out
    ref = run_steps(Engine.from_args("demo", compile="never", dtype=dtype, **KW))
    engine = Engine.from_args("demo", compile="cached", dtype=dtype, **KW)
    assert type(engine.loaded.runner.forward).__name__ == "ArtifactForward"
    assert engine.loaded.runner.graphs is not None  # decode steps replay captured graphs
    got = compare(run_steps(engine), ref)
    assert got["rel_err_max"] <= tol, got


def test_fp8_compiled_runs_under_graphs_and_tracks_the_unquantized_model():
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs sm_89 or newer")
    compile_demo("bfloat16", "--quantization", "fp8")
    ref = run_steps(Engine.from_args("demo", compile="never", dtype="bfloat16", **KW))
    engine = Engine.from_args("demo", compile="cached", dtype="bfloat16", quantization="fp8", **KW)
    got = compare(run_steps(engine), ref)
    assert got["cosine_min"] >= 0.95, got  # the demo's wide random weights: 0.957 on CPU
