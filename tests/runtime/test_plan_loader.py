"""The plan loader on the CPU: a plan artifact built for h100 runs with Triton's interpreter
in place of the GPU (every launch still picks its cubin from the artifact's table) and gives
the reference model's logits and greedy tokens; the cubin table picks the most specialized
cubin a launch satisfies and names the mismatch when none does; parameters pack as the
cubin's ABI says."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl

from compile_cache import Artifact
from kiln.errors import KilnError
from runtime.cubin_launcher import CubinTable, pack_params
from runtime.loaders import loader_for
from runtime.loaders.plan import PlanLoader, resolve_callable
from tests.hf_models import make_checkpoint

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("plan_interpret_worker.py")
TINY = dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=16,
            vocab_size=320, num_hidden_layers=3, intermediate_size=160)  # fmt: skip


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    from lowering.compile import CompileOptions, compile_model

    folder = tmp_path_factory.mktemp("plan-run")
    make_checkpoint(folder / "ckpt", "llama", **TINY)
    os.environ.setdefault("HELION_INTERPRET", "1")  # Helion generates code; it runs nothing here
    opts = CompileOptions(model=str(folder / "ckpt"), target="h100", dtype="float32")
    art = compile_model(opts, progress=lambda m: None).artifact
    env = {k: v for k, v in os.environ.items() if k != "HELION_INTERPRET"}
    env.update(TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(WORKER), str(art.path), str(folder / "ckpt"), str(folder / "o.pt")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return art, torch.load(folder / "o.pt", weights_only=False)


@pytest.mark.slow
def test_a_plan_run_in_the_interpreter_matches_the_reference_model(interpreted):
    _, out = interpreted
    assert len(out["plan"]) == len(out["reference"]) == 5  # prefill, 3 decodes, T=1 decode
    for step, (got, want) in enumerate(zip(out["plan"], out["reference"], strict=True)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"step {step}")
        assert got.argmax(-1).tolist() == want.argmax(-1).tolist(), step


@pytest.mark.slow
def test_every_kernel_of_the_plan_ran_from_a_cubin_of_the_artifact(interpreted):
    art, out = interpreted
    ran = {i.split("-")[0] for i in out["launches"]}
    assert ran == {"_helion_rms_norm_kernel", "_helion_fused_add_rms_norm_kernel",
                   "_helion_rotary_neox_kernel", "_helion_silu_and_mul_kernel",
                   "_write_kv_kernel", "_attention_kernel"}  # fmt: skip
    listed = {Path(p).stem for p in art.manifest["cubins"]}
    assert set(out["launches"]) <= listed


@pytest.mark.slow
def test_loading_and_running_a_plan_imports_no_compiler(interpreted):
    _, out = interpreted
    assert out["imported"] == [], out["imported"]


@triton.jit
def _axpy(x, y, out, n, alpha, stride, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    tl.store(out + i * stride, alpha * tl.load(x + i, mask=m) + tl.load(y + i, mask=m), mask=m)


def _meta(cubin_id: str, specialization: dict, **overrides) -> dict:
    from compile_cache.triton_abi import source_hash

    signature = {"x": "*fp32", "y": "*fp32", "out": "*fp32", "n": "i32", "alpha": "fp32",
                 "stride": "i32", "BLOCK": "constexpr"}  # fmt: skip
    constexprs = {"BLOCK": 64}
    if specialization.get("stride") == "one":
        signature["stride"], constexprs["stride"] = "constexpr", 1
    meta = {
        "id": cubin_id, "fn": "_axpy", "source_hash": source_hash(_axpy), "num_warps": 4,
        "num_stages": 2, "signature": signature, "constexprs": constexprs,
        "specialization": specialization, "scratch_params": ["global", "profile"],
        "global_scratch_size": 0, "profile_scratch_size": 0, "shared": 0,
    }  # fmt: skip
    return {**meta, **overrides}


SPECIAL = {"x": "div16", "y": "div16", "out": "div16", "n": "div16", "stride": "one"}


def _args(n=32, stride=1, offset=0):
    buf = torch.zeros(256)
    x = buf[offset : offset + n]
    return (x, torch.zeros(n), torch.zeros(n), n, 0.5, stride, 64)


def test_the_most_specialized_satisfied_cubin_is_chosen():
    table = CubinTable([_meta("generic", {}), _meta("special", SPECIAL)])
    pick = lambda *a: table.select(_axpy, _args(*a), 4, 2)[0]["id"]  # noqa: E731
    assert pick() == "special"
    assert pick(32, 2) == "generic"  # stride 2: the special cubin has stride == 1 built in
    assert pick(33) == "generic"  # n not a multiple of 16
    assert pick(32, 1, 1) == "generic"  # x is 4 bytes past an aligned address


def test_no_cubin_for_a_launch_names_the_kernel_and_the_mismatch():
    table = CubinTable([_meta("special", SPECIAL)])
    with pytest.raises(KilnError, match="no cubin of kernel _axpy.*stride=2, built for stride=1"):
        table.select(_axpy, _args(32, 2), 4, 2)
    with pytest.raises(KilnError, match="BLOCK=128, built with 64"):
        table.select(_axpy, (*_args()[:-1], 128), 4, 2)
    with pytest.raises(KilnError, match="num_warps=8, built with 4"):
        table.select(_axpy, _args(), 8, 2)


def test_a_kernel_whose_source_changed_is_refused():
    table = CubinTable([_meta("special", SPECIAL, source_hash="0" * 64)])
    with pytest.raises(KilnError, match="no cubin for kernel _axpy with this source"):
        table.select(_axpy, _args(), 4, 2)


def test_parameters_pack_in_order_without_constants_and_with_scratch():
    meta = _meta("special", SPECIAL)
    args = _args()
    _, params = CubinTable([meta]).select(_axpy, args, 4, 2)
    values = pack_params(meta, params, args, [0, 0])
    assert [type(v) for v in values] == [ctypes.c_uint64] * 3 + [ctypes.c_int32, ctypes.c_float] + [ctypes.c_uint64] * 2  # fmt: skip
    assert values[0].value == args[0].data_ptr() and values[3].value == 32
    assert values[4].value == 0.5 and values[-1].value == 0


def test_a_cooperative_kernel_is_refused_at_load():
    with pytest.raises(KilnError, match="launch_cooperative_grid"):
        CubinTable([_meta("c", {}, launch_cooperative_grid=True)])


def test_plan_callables_resolve_only_torch_ops_operator_and_math():
    assert resolve_callable("torch.ops.aten.linear.default") is torch.ops.aten.linear.default
    import operator

    assert resolve_callable("operator.getitem") is operator.getitem
    with pytest.raises(KilnError, match="not a torch op"):
        resolve_callable("os.system")


def test_a_plan_artifact_gets_the_plan_loader_and_a_b200_one_is_refused_here():
    h100 = {"name": "h100", "device_type": "cpu"}  # a CPU stand-in passes the host check
    art = Artifact("ab" * 32, Path("/nonexistent"), {"lowering": "plan", "target": h100})
    assert type(loader_for(art)) is PlanLoader
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    b200 = {"name": "b200", "device_type": "cuda", "arch": "sm_100a"}
    art = Artifact("ab" * 32, Path("/nonexistent"), {"lowering": "plan", "target": b200})
    with pytest.raises(KilnError, match="targets b200 \\(sm_100a\\), but this host has no GPU"):
        loader_for(art)
