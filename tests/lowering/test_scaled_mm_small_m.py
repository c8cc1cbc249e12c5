"""The small-M fp8 GEMM (`ir/kernels/scaled_mm_small_m.py`): its split plan, what it refuses,
its dispatch by token count (a Python `if` eagerly, `torch.cond` when traced with a dynamic
token count) and, on a GPU, its numerics at Llama-3-8B's shapes, CUDA-graph capture and an
AOTInductor package that takes both branches. The kernel itself runs in Triton's interpreter
on its registered cases (tests/lowering/test_triton_interpret.py)."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.export import Dim, export

import ir.kernels.scaled_mm_small_m as small
from ir.kernels.base import load_config
from ir.kernels.scaled_mm import scaled_mm as library
from ir.registry import get_op
from lowering.export import kernels_in_graph

# Llama-3-8B's linear layers as (N, K): qkv, o, gate_up, down
LLAMA3_8B = ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336))
reference = get_op("scaled_mm").reference


@pytest.mark.parametrize("target", ["h100", "h200", "b200"])
@pytest.mark.parametrize("n, k", LLAMA3_8B)
@pytest.mark.parametrize("groups", [0, 32])
def test_split_plan_covers_k_and_fills_the_grid(target, n, k, groups):
    config = load_config(small.NAME, target)
    block_k, splits, k_per_split = small.split_plan(n, k, max(groups, 1), config)
    assert k_per_split % block_k == 0 and (splits - 1) * k_per_split < k <= splits * k_per_split
    if groups:  # a block never straddles two scale groups
        assert (k // groups) % block_k == 0 and block_k >= small.MIN_BLOCK_K
    programs = -(-n // config["BLOCK_N"]) * splits
    fewer_blocks = -(-k // block_k) // (2 * splits) < config["min_k_blocks"]
    assert programs >= config["programs"] or fewer_blocks  # split until one of the two holds
    if splits > 1:  # and never further: half as many splits would leave the grid short
        assert -(-n // config["BLOCK_N"]) * splits // 2 < config["programs"]


def test_kernel_names_include_the_reduction_only_when_k_is_split():
    o_proj = torch.empty(4096, 4096, dtype=torch.float8_e4m3fn)
    narrow_k = torch.empty(64, 128, dtype=torch.float8_e4m3fn)
    per_token = torch.empty(3, 1)
    assert small.kernel_names(o_proj, per_token) == [
        "_scaled_mm_small_m_kernel",
        "_split_k_reduce_kernel",
    ]
    assert small.kernel_names(narrow_k, per_token) == ["_scaled_mm_small_m_kernel"]


def test_refusals_name_the_layout():
    xq, x_scale, wq, w_scale, _, _ = small.operands(3, 128, 16)
    assert small.kernel_refusal(xq, x_scale, wq, w_scale) is None
    e5m2 = xq.to(torch.float8_e5m2)
    assert "float8_e4m3fn" in small.kernel_refusal(e5m2, x_scale, wq, w_scale)
    narrow = small.operands(3, 128, 16, groups=8)  # 16-wide groups: below one fp8 MMA's K
    assert "multiple of 32" in small.kernel_refusal(*narrow[:4])
    assert "output channels" in small.kernel_refusal(xq, x_scale, wq, w_scale[:3])
    assert small.kernel_refusal(*small.operands(3, 128, 16, groups=-1)[:4]) is None  # [1]
    one_row = x_scale[:1]  # [1, 1] for 3 tokens: per tensor in 2-D, the library takes it
    assert "one per token" in small.kernel_refusal(xq, one_row, wq, w_scale)


def close_bf16(got: torch.Tensor, want: torch.Tensor) -> None:
    """One bf16 rounding of an fp32 sum (the reference sums in another order)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got.float(), want.float(), rtol=1.6e-2, atol=1e-2)


def cpu_scaled_mm_runs() -> bool:
    a = torch.ones(16, 16).to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(a, a.t(), torch.ones(16, 1), torch.ones(1, 16), out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError):
        return False
    return True


def test_eager_dispatch_by_token_count(monkeypatch):
    """Eagerly the token count picks the path: the kernel up to the pinned max_m, the library
    call above it and for layouts the kernel refuses (the launches are recorded here)."""
    import ir.kernels.scaled_mm as library_module

    calls = []
    monkeypatch.setattr(small, "scaled_mm_small_m_launch", lambda *a, **kw: calls.append("kernel"))
    monkeypatch.setattr(library_module, "scaled_mm", lambda *a: calls.append("library"))
    max_m = load_config(small.NAME, "h100")["max_m"]  # a CPU run borrows h100's config
    for m in (1, max_m, max_m + 1, 64):
        small.scaled_mm(*small.operands(m, 128, 48))
    small.scaled_mm(*small.operands(3, 128, 48, groups=8))  # 16-wide groups: refused
    assert calls == ["kernel", "kernel", "library", "library", "library"]


@pytest.mark.skipif(not cpu_scaled_mm_runs(), reason="this torch's CPU _scaled_mm refuses")
def test_above_max_m_the_result_is_the_library_call():
    max_m = load_config(small.NAME, "h100")["max_m"]
    args = small.operands(max_m + 1, 128, 48, bias=True)
    assert torch.equal(small.scaled_mm(*args), library(*args))
    close_bf16(small.scaled_mm(*args), reference(*args))


class Linear(torch.nn.Module):
    def forward(self, x, wq, w_scale, bias):
        xq, x_scale = torch.ops.kiln.quant_fp8(x, 0)
        return torch.ops.kiln.scaled_mm(xq, x_scale, wq, w_scale, bias, torch.bfloat16) * 2


def linear_args(t: int, n: int, k: int, device: str):
    return (
        torch.randn(t, k, dtype=torch.bfloat16, device=device),
        (torch.randn(n, k, device=device) * 40).to(torch.float8_e4m3fn),
        torch.rand(n, device=device) * 1e-2 + 1e-3,
        torch.randn(n, dtype=torch.bfloat16, device=device),
    )


def export_linear(args: tuple, launches: dict | None = None):
    """`Linear` exported as lowering exports a step: the token count dynamic, the op routed to
    its in-graph form (the triton implementation)."""
    gm = torch.fx.symbolic_trace(Linear())
    dims = ({0: Dim("T", min=1, max=512)}, None, None, None)
    impls = {"scaled_mm": "triton", "quant_fp8": "reference"}
    with kernels_in_graph(gm, impls, launches):
        return export(gm, args, dynamic_shapes=dims, strict=False)


def fake_cuda(args: tuple, mode: FakeTensorMode) -> tuple:
    with mode:
        return tuple(
            torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device="cuda") for a in args
        )


def test_traced_with_dynamic_tokens_it_is_a_cond_on_the_token_count():
    mode = FakeTensorMode()
    launches: dict = {}
    with mode:
        program = export_linear(fake_cuda(linear_args(7, 4096, 4096, "cpu"), mode), launches)
    code = program.graph_module.code
    max_m = load_config(small.NAME, "h100")["max_m"]
    assert f"<= {max_m}" in code and "torch.ops.higher_order.cond" in code
    kernel, fallback = program.graph_module.true_graph_0, program.graph_module.false_graph_0
    assert "torch.ops.kiln_triton.scaled_mm_small_m" in kernel.code
    assert "torch.ops.aten._scaled_mm" in fallback.code and "kiln_triton" not in fallback.code
    noted = {name for call in launches["scaled_mm"] for name in call}
    assert noted == {"_scaled_mm_small_m_kernel", "_split_k_reduce_kernel", "aten._scaled_mm"}


def test_max_m_zero_turns_the_kernel_off(monkeypatch):
    config = dict(load_config(small.NAME, "h100"), max_m=0)
    monkeypatch.setattr(small, "runtime_config", lambda name, device_type: config)
    mode = FakeTensorMode()
    with mode:
        code = export_linear(fake_cuda(linear_args(7, 256, 128, "cpu"), mode)).graph_module.code
    assert "cond" not in code and "torch.ops.aten._scaled_mm" in code


def _kernels_in(gm: torch.fx.GraphModule) -> set[str]:
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    return {
        getattr(k, "fn", k).__name__
        for node in gm.graph.nodes
        if "triton_kernel_wrapper" in str(node.target)
        for k in [kernel_side_table.get_kernel(node.kwargs["kernel_idx"])]
    }


def functionalized(program, args: tuple) -> torch.fx.GraphModule:
    """The exported program after AOTAutograd's functionalization, the step AOTInductor runs
    before Inductor: `triton_op`s decompose into their kernel launches there."""
    from torch._functorch.aot_autograd import aot_export_module

    class Tupled(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *a):
            return (self.module(*a),)

    return aot_export_module(Tupled(program.module()), args, trace_joint=False)[0]


def test_aot_functionalization_puts_the_kernel_launches_in_the_branch():
    mode = FakeTensorMode()
    with mode:
        args = fake_cuda(linear_args(7, 4096, 4096, "cpu"), mode)
        gm = functionalized(export_linear(args), args)
    branch = next(m for name, m in gm.named_children() if name.startswith("true_graph"))
    assert _kernels_in(branch) == {"_scaled_mm_small_m_kernel", "_split_k_reduce_kernel"}
    assert "kiln_triton" not in branch.code


# --- on the GPU ---------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("n, k", LLAMA3_8B)
@pytest.mark.parametrize("m", [1, 3, 8, 16, 17, 32])
def test_kernel_matches_reference_at_llama3_8b_shapes(n, k, m):
    config = small.runtime_config(small.NAME, "cuda")
    for groups in (0, 32):
        args = small.operands(m, k, n, groups, bias=m == 3, device="cuda", seed=m)
        got = small.scaled_mm_small_m_launch(*args, config=config)
        close_bf16(got, reference(*args))


@pytest.mark.gpu
def test_eager_dispatch_by_token_count_and_capture():
    """Up to max_m the kernel's bits, above them torch._scaled_mm's; a CUDA graph captures
    the kernel branch and replays it."""
    config = small.runtime_config(small.NAME, "cuda")
    max_m = config["max_m"]
    for m in sorted({1, max_m, max_m + 1, 64}):
        args = small.operands(m, 4096, 4096, device="cuda", seed=m)
        got = small.scaled_mm(*args)
        want = (
            small.scaled_mm_small_m_launch(*args, config=config) if m <= max_m else library(*args)
        )
        assert torch.equal(got, want), m
        close_bf16(got, reference(*args))
    args = small.operands(1, 4096, 6144, device="cuda")
    small.scaled_mm(*args)  # compile before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = small.scaled_mm(*args)
    args[0].copy_(small.operands(1, 4096, 6144, device="cuda", seed=9)[0])
    graph.replay()
    assert torch.equal(captured, small.scaled_mm(*args))


@pytest.mark.gpu
def test_mutation_analysis_clones_no_input():
    """Functionalization copies what a kernel may write: only the output and partials here
    (a cloned weight would cost a copy of it per call)."""
    args = linear_args(7, 4096, 4096, "cuda")
    gm = functionalized(export_linear(args), args)
    branch = next(m for name, m in gm.named_children() if name.startswith("true_graph"))
    for node in branch.graph.nodes:
        if "triton_kernel_wrapper" in str(node.target):
            assert set(node.kwargs["tensors_to_clone"]) <= {"out", "partial"}, node.kwargs


@pytest.mark.gpu
def test_aoti_package_takes_both_branches_and_replays_in_a_graph(tmp_path):
    """AOTInductor compiles the cond with the kernel inside; the package runs the kernel for
    few tokens and torch._scaled_mm for many, and a CUDA graph replays it."""
    import json
    import zipfile

    from torch._inductor import aoti_compile_and_package, aoti_load_package

    from lowering.export import inline_references

    n, k = 1024, 2048
    impls = {"scaled_mm": "triton", "quant_fp8": "reference"}
    program = inline_references(export_linear(linear_args(7, n, k, "cuda")), impls)[0]
    path = aoti_compile_and_package(program, package_path=str(tmp_path / "linear.pt2"))
    with zipfile.ZipFile(path) as z:
        nodes = [
            node.get("node", {}).get("target", "")
            for name in z.namelist() if name.endswith(".wrapper.json")
            for node in json.loads(z.read(name)).get("nodes", [])
        ]  # fmt: skip
    assert not [t for t in nodes if t.startswith(("kiln_triton::", "kiln::"))], nodes
    runner = aoti_load_package(path)
    max_m = small.runtime_config(small.NAME, "cuda")["max_m"]
    _, wq, w_scale, bias = linear_args(1, n, k, "cuda")
    for t in sorted({1, max_m, max_m + 1, 64}):
        x = torch.randn(t, k, dtype=torch.bfloat16, device="cuda")
        xq, x_scale = get_op("quant_fp8").reference(x, 0)
        want = reference(xq, x_scale, wq, w_scale, bias, torch.bfloat16) * 2
        close_bf16(runner(x, wq, w_scale, bias), want)
    x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
    runner(x, wq, w_scale, bias)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = runner(x, wq, w_scale, bias)
    x.copy_(torch.randn_like(x))
    graph.replay()
    close_bf16(captured, runner(x, wq, w_scale, bias))
