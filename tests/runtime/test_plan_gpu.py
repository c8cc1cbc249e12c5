"""Plan artifacts on the GPU: one built with no GPU visible (CUDA_VISIBLE_DEVICES="", as on a
laptop or CI box) serves the same greedy tokens as the natively built artifact, for a tiny
fp32 checkpoint of every family, decode under CUDA graphs; so does a `--lowering plan` build
on the GPU itself; fp8 plans match the native fp8 artifact; a b200 plan is refused on Hopper
naming both archs (GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kiln.errors import KilnError
from tests.hf_models import add_demo_tokenizer, make_checkpoint

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ["llama", "qwen2", "qwen3", "mistral"]
ODD = dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=16,
           num_hidden_layers=3)  # fmt: skip
KW = dict(gpu_memory_utilization=0.2, max_model_len=256)


def kiln_compile(
    model: Path | str, *args: str, no_gpu: bool = False, cache: Path | None = None
) -> dict:
    env = dict(os.environ)
    if no_gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if cache is not None:  # a cache of its own: the build must not hit another one's artifact
        env["KILN_CACHE_DIR"] = str(cache)
    proc = subprocess.run(
        [sys.executable, "-m", "kiln", "compile", str(model), "--json", "--no-record", *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def host_target() -> str:
    from ir.targets import detect_host_target

    return detect_host_target().name


def greedy(model: Path | str, artifact: str) -> tuple[list, bool]:
    """Greedy tokens of three prompts through `artifact` (fp32), and whether decode used
    graphs: the same check `benchmarks/plan_carry.py check` runs on carried plans."""
    from benchmarks.plan_carry import greedy as plan_greedy

    return plan_greedy(Path(model), artifact=artifact)


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp(request.param)
    make_checkpoint(path, request.param, **ODD)
    add_demo_tokenizer(path)  # an engine needs a tokenizer; prompts are token ids
    return path


def test_a_plan_built_without_a_gpu_serves_the_native_tokens(checkpoint):
    plan = kiln_compile(checkpoint, "--target", host_target(), "--dtype", "float32", no_gpu=True)
    assert plan["manifest"]["lowering"] == "plan", plan["manifest"]["lowering"]
    native = kiln_compile(checkpoint, "--target", "auto", "--lowering", "piecewise",
                          "--dtype", "float32")  # fmt: skip
    assert native["manifest"]["lowering"] == "aoti_piecewise"
    got, graphs = greedy(checkpoint, plan["artifact"])
    want, _ = greedy(checkpoint, native["artifact"])
    assert graphs, "decode did not run under CUDA graphs"
    assert got == want


def test_a_native_plan_build_serves_the_native_tokens(checkpoint, tmp_path):
    plan = kiln_compile(checkpoint, "--target", "auto", "--lowering", "plan", "--dtype", "float32",
                        cache=tmp_path / "cache")  # fmt: skip
    assert plan["built"], "the plan was found in a cache, not built on this GPU"
    assert plan["manifest"]["lowering"] == "plan"
    native = kiln_compile(checkpoint, "--target", "auto", "--lowering", "piecewise",
                          "--dtype", "float32")  # fmt: skip
    assert native["manifest"]["lowering"] == "aoti_piecewise"
    assert greedy(checkpoint, plan["artifact"])[0] == greedy(checkpoint, native["artifact"])[0]


def test_an_fp8_plan_built_without_a_gpu_matches_the_native_fp8_artifact():
    from benchmarks.gpu_compile_check import compare, run_steps

    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs sm_89 or newer")
    fp8 = ("--dtype", "bfloat16", "--quantization", "fp8")
    plan = kiln_compile("demo", "--target", host_target(), *fp8, no_gpu=True)
    native = kiln_compile("demo", "--target", "auto", "--lowering", "piecewise", *fp8)
    engine = dict(model="demo", dtype="bfloat16", quantization="fp8") | KW
    got = run_steps(engine | dict(artifact=plan["artifact"]))
    want = run_steps(engine | dict(artifact=native["artifact"]))
    assert compare(got, want)["cosine_min"] >= 0.999, compare(got, want)


def test_a_b200_plan_is_refused_on_hopper_naming_both_archs(tmp_path):
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("needs a Hopper GPU")
    make_checkpoint(tmp_path, "llama", **ODD)
    plan = kiln_compile(tmp_path, "--target", "b200", "--dtype", "float32")
    assert plan["manifest"]["lowering"] == "plan"
    from kiln.llm import LLM

    with pytest.raises(KilnError, match=r"targets b200 \(sm_100a\), but this GPU is .*\(sm_90\)"):
        LLM(str(tmp_path), artifact=plan["artifact"], dtype="float32", **KW)
