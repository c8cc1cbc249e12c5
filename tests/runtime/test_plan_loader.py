"""The plan loader on the CPU: a plan artifact built for h100 runs with Triton's interpreter
in place of the GPU (every launch still picks its cubin from the artifact's table) and gives
the reference model's logits and greedy tokens; loaded host-only in a process without Triton
(libcuda stubbed), it makes the very launches it makes with Triton's own kernels, and Triton
stays unimported; a plan program reads constants, references and lists of them as the plan
encodes them, step after step; a Helion body's runner finds the stored source of each (kernel,
config) it is called with. The cubin launcher has its own tests (test_cubin_launcher.py), the
host-only stand-ins theirs (tests/ir/test_host_triton.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compile_cache import Artifact
from compile_cache.formats import PLAN_FORMAT
from kiln.errors import KilnError
from runtime.loaders import loader_for
from runtime.loaders.plan import PlanLoader, resolve_callable
from tests.hf_models import make_checkpoint

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("plan_interpret_worker.py")
LAUNCHES_WORKER = Path(__file__).with_name("plan_launches_worker.py")
TINY = dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=16,
            vocab_size=320, num_hidden_layers=3, intermediate_size=160)  # fmt: skip


@pytest.fixture(scope="module")
def plan_artifact(tmp_path_factory):
    """(a plan artifact of a tiny Llama for h100, its checkpoint)."""
    from lowering.compile import CompileOptions, compile_model

    folder = tmp_path_factory.mktemp("plan-run")
    make_checkpoint(folder / "ckpt", "llama", **TINY)
    os.environ.setdefault("HELION_INTERPRET", "1")  # Helion generates code; it runs nothing here
    opts = CompileOptions(model=str(folder / "ckpt"), target="h100", dtype="float32")
    return compile_model(opts, progress=lambda m: None).artifact, folder / "ckpt"


def _worker_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HELION_INTERPRET", "TRITON_INTERPRET")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


@pytest.fixture(scope="module")
def interpreted(plan_artifact):
    art, ckpt = plan_artifact
    out = ckpt.parent / "o.pt"
    cmd = [sys.executable, str(WORKER), str(art.path), str(ckpt), str(out)]
    env = _worker_env(TRITON_INTERPRET="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return art, torch.load(out, weights_only=False)


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


@pytest.fixture(scope="module")
def fp8_plan_artifact(tmp_path_factory):
    """(an fp8 plan artifact of a tiny Llama for h100, its checkpoint): its stored Helion
    sources import Inductor's device helpers."""
    from lowering.compile import CompileOptions, compile_model

    folder = tmp_path_factory.mktemp("plan-fp8")
    make_checkpoint(folder / "ckpt", "llama", **TINY)
    os.environ.setdefault("HELION_INTERPRET", "1")
    opts = CompileOptions(model=str(folder / "ckpt"), target="h100", dtype="float32",
                          quantization="fp8")  # fmt: skip
    return compile_model(opts, progress=lambda m: None).artifact, folder / "ckpt"


BF16_KERNELS = {"_helion_rms_norm_kernel", "_helion_fused_add_rms_norm_kernel",
                "_helion_rotary_neox_kernel", "_helion_silu_and_mul_kernel",
                "_write_kv_kernel", "_attention_kernel"}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("which", ["bf16", "fp8"])
def test_a_plan_loaded_host_only_launches_the_same_and_imports_no_compiler(which, request):
    art, ckpt = request.getfixturevalue("plan_artifact" if which == "bf16" else "fp8_plan_artifact")
    runs = {}
    for mode in ("host-only", "triton"):
        out = ckpt.parent / f"launches-{mode}.json"
        cmd = [sys.executable, str(LAUNCHES_WORKER), str(art.path), str(ckpt), str(out), mode]
        proc = subprocess.run(cmd, env=_worker_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[mode] = json.loads(out.read_text())
    host, jit = runs["host-only"], runs["triton"]
    assert host["host_only"] and host["compiler_modules"] == []
    assert not jit["host_only"] and "triton" in jit["compiler_modules"]
    launches = [launch for step in host["launches"].values() for launch in step]
    kernels = {launch["kernel"] for launch in launches}
    if which == "bf16":
        assert kernels == BF16_KERNELS
    else:  # the quantizing fused kernels and the small-M fp8 GEMM (their sources import
        # Inductor's device helpers)
        assert {"_helion_rms_norm_quant_kernel", "_helion_fused_add_rms_norm_quant_kernel",
                "_helion_silu_and_mul_quant_kernel", "_scaled_mm_small_m_kernel",
                "_attention_kernel"} <= kernels, kernels  # fmt: skip
    assert all("driver" in launch for launch in launches)  # no empty grid: each one reached it
    assert host["launches"] == jit["launches"]


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


def _plan() -> dict:
    """x [T, 4], y [4] -> m = (x + y).reshape(T, 2, 2)[..., 0] * 3, its sum over T and m
    beside x[:, :2]: references, constants, kwargs, lists holding references and constants, a
    tuple's items."""
    ref = lambda name: {"ref": name}  # noqa: E731
    aten = lambda name, target, *args, **kwargs: {  # noqa: E731
        "name": name, "target": f"torch.ops.aten.{target}", "args": list(args), "kind": "aten",
        **({"kwargs": kwargs} if kwargs else {}),
    }  # fmt: skip
    entries = [
        aten("t", "sym_size.int", ref("x"), 0),
        aten("a", "add.Tensor", ref("x"), ref("y")),
        aten("r", "reshape.default", ref("a"), [ref("t"), 2, 2]),
        aten("s", "unbind.int", ref("r"), -1),
        {"name": "g", "target": "operator.getitem", "args": [ref("s"), 0], "kind": "python"},
        aten("m", "mul.Tensor", ref("g"), 3.0),
        aten("z", "sum.dim_IntList", ref("m"), [0], keepdim=True, dtype={"dtype": "float64"}),
        aten("h", "slice.Tensor", ref("x"), 1, 0, 2),
        aten("c", "cat.default", [ref("m"), ref("h")], -1),
    ]
    return {"format": PLAN_FORMAT, "inputs": ["x", "y"], "entries": entries,
            "outputs": [ref("m"), ref("z"), ref("c")]}  # fmt: skip


def test_a_plan_program_runs_its_entries_on_each_steps_inputs(tmp_path):
    from runtime.loaders.plan import PlanProgram

    program = PlanProgram(_plan(), launcher=None, sources=tmp_path, device="cpu", target="h100")
    y = torch.randn(4)
    for tokens in (5, 2, 5, 16):  # the token count varies from step to step
        x = torch.randn(tokens, 4)
        m, z, c = program(x, y)
        want = (x + y).reshape(tokens, 2, 2)[..., 0] * 3
        torch.testing.assert_close(m, want)
        torch.testing.assert_close(z, want.sum(0, keepdim=True, dtype=torch.float64))
        torch.testing.assert_close(c, torch.cat([want, x[:, :2]], -1))
    with pytest.raises(KilnError, match="the plan takes 2 inputs, it was given 1"):
        program(x)


def test_a_helion_bodys_runner_finds_the_source_of_each_kernel_and_config(tmp_path):
    from runtime.loaders.plan import SourceRunner

    def kernel():  # stands in for a Helion kernel function: only its name matters here
        pass

    name = f"{kernel.__module__}.{kernel.__qualname__}"
    configs = {"a": {"block": 16}, "b": {"block": 32}}
    runs = []
    for tag, config in configs.items():
        source = f"src-runner-{tag}-{tmp_path.name}"
        (tmp_path / f"{source}.py").write_text(
            f"def entry(x, *, _launcher):\n    return ({tag!r}, x, _launcher)\n"
        )
        runs.append({"fn": name, "config": json.dumps(config, sort_keys=True),
                     "source": source, "entry": "entry"})  # fmt: skip
    runner = SourceRunner(runs, tmp_path, launcher="L")
    for tag in ("a", "a", "b", "a", "b"):
        assert runner(kernel, configs[tag], 1) == (tag, 1, "L")
    assert runner(kernel, {"block": 32}, 2) == ("b", 2, "L")  # an equal config, not the same one
    with pytest.raises(KilnError, match="ran with config .*64.*recompile"):
        runner(kernel, {"block": 64}, 3)


def test_stored_host_code_calls_tritons_constexpr_helpers_as_plain_functions(tmp_path):
    import triton

    from runtime.loaders.plan import import_source

    path = tmp_path / f"src-host-{tmp_path.name}.py"
    path.write_text(
        "import triton\n\n\ndef host(n):\n"
        "    return triton.next_power_of_2(n), triton.cdiv(n, 16), triton.jit\n"
    )
    module = import_source(path)
    assert module.host(96) == (128, 6, triton.jit)
    assert module.host(1) == (1, 1, triton.jit)
    assert module.triton.next_power_of_2 is triton.next_power_of_2.fn  # not the constexpr one
