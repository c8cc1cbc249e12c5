"""Plan artifacts built on this GPU-less host for h100 and b200: every cubin is for the target
arch (read from the ELF), the plan covers every node of the lowered graph, every kernel was
compiled at the model's shapes with the token count left a runtime argument, identical layers
share cubins, and the manifest names only what the artifact contains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ir.targets import get_target
from kiln.errors import KilnError
from lowering.compile import CompileOptions, _capture, choose_impls, compile_model
from lowering.cubin import cubin_arch, tkinfo_arch
from lowering.package_calls import check_manifest_calls
from lowering.plan import build_plan
from lowering.plan_kernels import plan_jobs
from lowering.progress import as_progress
from tests.hf_models import make_checkpoint

pytestmark = pytest.mark.slow  # each build runs ptxas on a dozen kernels: ~15 s
TINY = dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=16,
            vocab_size=320, num_hidden_layers=3, intermediate_size=160)  # fmt: skip
ARCH = {"h100": "sm_90a", "b200": "sm_100a"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-odd")
    make_checkpoint(path, "llama", **TINY)
    return path


def build(model: str, target: str, **options):
    opts = CompileOptions(model=model, target=target, **options)
    return compile_model(opts, progress=lambda message: None).artifact


@pytest.fixture(scope="module")
def artifacts(tiny):
    return {
        (name, target): build(model, target)
        for name, model in (("tiny", str(tiny)), ("demo", "demo"))
        for target in ("h100", "b200")
    }


def kernels(art) -> list[tuple[bytes, dict]]:
    folder = Path(art.path) / "kernels"
    return [
        ((folder / f"{Path(p).stem}.cubin").read_bytes(),
         json.loads((folder / f"{Path(p).stem}.json").read_text()))
        for p in art.manifest["cubins"]
    ]  # fmt: skip


@pytest.mark.parametrize("model", ["tiny", "demo"])
@pytest.mark.parametrize("target", ["h100", "b200"])
def test_every_cubin_is_for_the_target_arch(artifacts, model, target):
    art = artifacts[(model, target)]
    assert art.manifest["lowering"] == "plan" and art.manifest["arch"] == ARCH[target]
    found = kernels(art)
    assert len(found) >= 10  # norms, rotary, SwiGLU, KV write, attention: specialized + generic
    for cubin, meta in found:
        assert cubin_arch(cubin) == tkinfo_arch(cubin) == ARCH[target] == meta["arch"], meta["id"]


@pytest.mark.parametrize("model", ["tiny", "demo"])
def test_the_plan_covers_every_node_of_the_lowered_graph(artifacts, model, tiny):
    art = artifacts[(model, "h100")]
    path = tiny if model == "tiny" else Path(art.manifest["model"])
    passed = capture(str(path) if model == "tiny" else "demo", "h100")
    plan = json.loads((Path(art.path) / "plan.json").read_text())
    calls = [n.name for n in passed.gm.graph.nodes if n.op == "call_function"]
    placeholders = [n.name for n in passed.gm.graph.nodes if n.op == "placeholder"]
    assert [e["name"] for e in plan["entries"]] == calls
    assert plan["inputs"] == placeholders == art.manifest["inputs"]
    kinds = {e["kind"] for e in plan["entries"]}
    assert kinds == {"aten", "python", "library", "kernel"}, kinds  # no op left to a reference
    gemms = [e for e in plan["entries"] if e["kind"] == "library"]
    assert gemms and all(e["target"] == "torch.ops.aten.linear.default" for e in gemms)
    assert all(e["kernels"] for e in plan["entries"] if e["kind"] == "kernel")


def capture(model: str, target: str):
    from model_defs.registry import resolve_model_path

    opts = CompileOptions(model=model, target=target)
    path = resolve_model_path(model)
    _, passed, _ = _capture(opts, path, get_target(target), {}, as_progress(lambda m: None))
    return passed


def expected_dims(cfg: dict, passed) -> dict[str, set[int]]:
    """Per op, model sizes that must appear among a kernel's example argument sizes. The MLP's
    intermediate size is the graph's (pad_for_kernels rounds it up with zero weights)."""
    heads = {cfg["num_heads"], cfg["num_kv_heads"]}
    (silu,) = {n.meta["val"].shape[-1] for n in passed.gm.graph.nodes if n.name.startswith("silu")}
    assert cfg["intermediate_size"] <= silu < cfg["intermediate_size"] + 128
    return {
        "rms_norm": {cfg["hidden_size"]},
        "fused_add_rms_norm": {cfg["hidden_size"]},
        "silu_and_mul": {silu},
        "rotary_embedding": heads,
        "attention": {cfg["num_kv_heads"], cfg["head_dim"]},  # the KV write: no query heads
    }


def next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


@pytest.mark.parametrize("model", ["tiny", "demo"])
def test_kernels_are_compiled_at_the_model_shapes(artifacts, model, tiny):
    art = artifacts[(model, "b200")]
    cfg = art.manifest["model_config"]
    plan = json.loads((Path(art.path) / "plan.json").read_text())
    op_of = {e["name"]: e["op"] for e in plan["entries"] if e["kind"] == "kernel"}
    expected = expected_dims(cfg, capture(str(tiny) if model == "tiny" else "demo", "b200"))
    for _, meta in kernels(art):
        ops = {op_of[n] for n in meta["nodes"]}
        assert len(ops) == 1, meta["nodes"]
        sizes = {d for a in meta["example"]["args"] if isinstance(a, dict) for d in a["shape"]}
        sizes |= {a for a in meta["example"]["args"] if isinstance(a, int)}
        op = ops.pop()
        missing = expected[op] - sizes
        assert not missing, f"{meta['id']} was built without the model's sizes {missing}"
        if op in ("rms_norm", "fused_add_rms_norm"):  # the whole row is one Helion block
            assert meta["constexprs"]["_RDIM_SIZE_1"] == next_pow2(cfg["hidden_size"])
        if "BLOCK_D" in meta["constexprs"]:  # attention's head block
            assert meta["constexprs"]["BLOCK_D"] == next_pow2(cfg["head_dim"]), meta["id"]


def test_token_count_is_a_runtime_argument_of_every_kernel(tiny):
    """Recording the plan at two token counts compiles the very same cubins: no kernel was
    specialized to the example step's size (a size-dependent constant or signature would
    change a cubin's id)."""
    passed = capture(str(tiny), "h100")
    target = get_target("h100")
    impls = choose_impls(passed.gm, target)
    ids = []
    for tokens in (13, 19):
        jobs, _ = plan_jobs(build_plan(passed, impls, target, 16, tokens).launches)
        ids.append(sorted(jobs))
    assert ids[0] == ids[1]


def test_identical_layers_share_one_cubin_set(artifacts):
    art = artifacts[("tiny", "h100")]
    rows = {r["op"]: r for r in art.manifest["ops"]}
    assert rows["attention"]["count"] == 3 and len(rows["attention"]["kernels"]) == 2
    for _, meta in kernels(art):
        if meta["fn"] == "_attention_kernel":
            assert len(meta["nodes"]) == 3  # every layer launches it


def test_each_kernel_has_a_generic_cubin_that_assumes_nothing(artifacts):
    """The specialized cubin turns ints equal to 1 into constants and assumes divisibility;
    the generic one of the same launch keeps every argument a parameter and assumes nothing."""
    by_fn: dict[str, list[dict]] = {}
    for _, meta in kernels(artifacts[("tiny", "h100")]):
        by_fn.setdefault(meta["fn"], []).append(meta)
    for fn, group in by_fn.items():
        generic = [m for m in group if not m["specialization"]]
        special = [m for m in group if m["specialization"]]
        assert len(generic) == len(special) == 1, fn
        (g,), (s,) = generic, special
        constants = {n for n, t in s["signature"].items() if t == "constexpr"}
        ones = {n for n, v in s["specialization"].items() if v == "one"}
        assert constants - {n for n, t in g["signature"].items() if t == "constexpr"} == ones
        assert len(g["arg_names"]) == len(s["arg_names"]) + len(ones)


def test_the_manifest_names_only_what_the_artifact_contains(artifacts, tmp_path):
    art = artifacts[("tiny", "h100")]
    check_manifest_calls(art.path, art.manifest)
    rows = [dict(r) for r in art.manifest["ops"]]
    rows[0]["kernels"] = ["made_up_kernel-000000000000"]
    with pytest.raises(KilnError, match="disagrees with its plan"):
        check_manifest_calls(art.path, {**art.manifest, "ops": rows})
    with pytest.raises(KilnError, match="is launched but not listed"):
        check_manifest_calls(art.path, {**art.manifest, "cubins": art.manifest["cubins"][1:]})


def test_an_fp8_artifact_cross_compiles_its_small_m_gemm_and_fused_quant_kernels():
    """scaled_mm runs the Triton small-M kernel's cubins for few tokens (its body calls
    torch._scaled_mm above the pinned max_m, which needs no cubin)."""
    art = build("demo", "h100", quantization="fp8")
    rows = {r["op"]: r for r in art.manifest["ops"]}
    assert rows["scaled_mm"]["runs"] == "cubin" and rows["scaled_mm"]["implementation"] == "triton"
    assert any("scaled_mm_small_m" in k or "small_m" in k for k in rows["scaled_mm"]["kernels"])
    assert rows["attention_quant"]["runs"] == "cubin" and rows["attention_quant"]["kernels"]
    fp8 = [m for _, m in kernels(art) if any(a.get("dtype") == "float8_e4m3fn"
                                               for a in m["example"]["args"] if isinstance(a, dict))]  # fmt: skip
    assert fp8, "no kernel takes an fp8 tensor"
    check_manifest_calls(art.path, art.manifest)


def test_a_plan_for_the_cpu_is_refused():
    with pytest.raises(KilnError, match="needs a GPU target"):
        build("demo", "cpu", lowering="plan")
