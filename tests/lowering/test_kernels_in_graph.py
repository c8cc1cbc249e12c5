"""A kernel with an in-graph form is traced into the exported program (a Triton launch node,
which AOTInductor compiles into the package), not left as a call back into Python. Runs on the
CPU: export traces with fake CUDA tensors and nothing launches."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.export import export

import ir.kernels.attention  # noqa: F401  (registers the Triton implementation)
from ir.ops.paged_inputs import paged_inputs
from lowering.export import kernels_in_graph

GPU_IMPLS = {"attention": "triton", "attention_quant": "reference", "quant_fp8": "reference"}


class Step(torch.nn.Module):
    def __init__(self, quant: bool):
        super().__init__()
        self.quant = quant

    def forward(self, q, k, v, k_cache, v_cache, slots, tables, seq_lens, starts):
        args = (q, k, v, k_cache, v_cache, slots, tables, seq_lens, starts, 0.25, 0)
        if self.quant:
            return torch.ops.kiln.attention_quant(*args, 0)
        return torch.ops.kiln.attention(*args) * 2


def fake_cuda_inputs():
    real = paged_inputs(
        [(5, 9), (1, 40)], num_heads=4, num_kv_heads=2, head_size=16, block_size=16,
        dtype=torch.bfloat16, device="cpu",
    )[:9]  # fmt: skip
    mode = FakeTensorMode()
    with mode:
        return mode, tuple(
            torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cuda") for t in real
        )


@pytest.mark.parametrize("quant", [False, True], ids=["attention", "attention_quant"])
def test_triton_attention_is_traced_into_the_program(quant):
    gm = torch.fx.symbolic_trace(Step(quant))
    before = gm.code
    mode, args = fake_cuda_inputs()
    with mode, kernels_in_graph(gm, GPU_IMPLS) as rewritten:
        code = export(gm, args, strict=False).graph_module.code
    assert rewritten == (["kiln::attention_quant"] if quant else ["kiln::attention"])
    assert "triton_kernel_wrapper" in code and "kiln.attention" not in code
    assert "_write_kv_kernel" in str(code) or code.count("triton_kernel_wrapper") >= 2
    assert gm.code == before  # the caller's graph is restored


def test_ops_without_an_in_graph_form_stay_calls():
    gm = torch.fx.symbolic_trace(Step(False))
    mode, args = fake_cuda_inputs()
    with mode, kernels_in_graph(gm, {"attention": "reference"}) as rewritten:
        code = export(gm, args, strict=False).graph_module.code
    assert rewritten == [] and "kiln.attention" in code


def _in_graph_ops() -> list[str]:
    from ir.registry import all_ops, load_kernels

    load_kernels()
    # Kernels the cross-compiler knows (Triton, Helion); a library call's in-graph form (the fp8
    # GEMM as aten._scaled_mm) is covered by the fused-step test below.
    kernels = ("triton", "helion")
    return [
        op.name for op in all_ops() if any(i.in_graph and i.provider in kernels for i in op.impls)
    ]


def _call_graph(op: str, args: tuple) -> torch.fx.GraphModule:
    """One call of an IR op: tensors as placeholders, the other arguments as literals."""
    from ir.registry import get_op

    graph = torch.fx.Graph()
    names = iter(f"arg{i}" for i in range(len(args)))
    call_args = [graph.placeholder(next(names)) if isinstance(a, torch.Tensor) else a for a in args]
    graph.output(graph.call_function(get_op(op).overload, tuple(call_args)))
    return torch.fx.GraphModule(torch.nn.Module(), graph)


@pytest.mark.parametrize("op", _in_graph_ops())
def test_every_in_graph_kernel_is_traced_into_the_program(op):
    """Registry-driven: each kernel's own first case, as fake CUDA tensors."""
    from ir.kernels.base import all_kernels
    from ir.registry import get_op

    impl = next(i for i in get_op(op).impls if i.in_graph and i.provider in ("triton", "helion"))
    spec = next(k for k in all_kernels() if k.op == op and k.provider == impl.provider)
    args = spec.cases()[0].args
    gm = _call_graph(op, args)
    mode = FakeTensorMode()
    with mode:
        fakes = tuple(
            torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device="cuda")
            for a in args if isinstance(a, torch.Tensor)
        )  # fmt: skip
    with mode, kernels_in_graph(gm, {op: impl.provider}) as rewritten:
        code = export(gm, fakes, strict=False).graph_module.code
    assert rewritten == [f"kiln::{op}"]
    assert "triton_kernel_wrapper" in code and f"kiln.{op}" not in code


class FusedStep(torch.nn.Module):
    """One call of every fused op the passes produce, plus an fp8 GEMM, on a GPU target."""

    def forward(self, x, residual, weight, wq, w_scale, up, positions, q, k, qk_w, cache):
        xq, x_scale, residual = torch.ops.kiln.fused_add_rms_norm_quant(
            x, residual, weight, 1e-5, 0
        )
        hidden = torch.ops.kiln.scaled_mm(xq, x_scale, wq, w_scale, None, torch.bfloat16)
        aq, a_scale = torch.ops.kiln.silu_and_mul_quant(up, 0)
        nq, n_scale = torch.ops.kiln.rms_norm_quant(hidden, weight, 1e-5, 0)
        q, k = torch.ops.kiln.qk_norm_rope(positions, q, k, qk_w, qk_w, 1e-6, cache, True)
        normed, residual = torch.ops.kiln.fused_add_rms_norm(hidden, residual, weight, 1e-5)
        return aq, a_scale, nq, n_scale, q, k, normed, residual


def fused_step_inputs(mode):
    t, hidden, inter, heads, head_size = 7, 64, 96, 4, 32
    bf16, fp8 = torch.bfloat16, torch.float8_e4m3fn
    with mode:
        cuda = dict(device="cuda")
        return (
            torch.empty(t, hidden, dtype=bf16, **cuda),
            torch.empty(t, hidden, dtype=bf16, **cuda),
            torch.empty(hidden, dtype=bf16, **cuda),
            torch.empty(hidden, hidden, dtype=fp8, **cuda),
            torch.empty(hidden, dtype=torch.float32, **cuda),
            torch.empty(t, 2 * inter, dtype=bf16, **cuda),
            torch.empty(t, dtype=torch.int64, **cuda),
            torch.empty(t, heads, head_size, dtype=bf16, **cuda),
            torch.empty(t, 2, head_size, dtype=bf16, **cuda),
            torch.empty(head_size, dtype=bf16, **cuda),
            torch.empty(64, head_size, dtype=torch.float32, **cuda),
        )


def triton_kernels_in(gm) -> set[str]:
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    names = set()
    for node in gm.graph.nodes:
        if "triton_kernel_wrapper" in str(node.target):
            kernel = kernel_side_table.get_kernel(node.kwargs["kernel_idx"])
            names.add(getattr(kernel, "fn", kernel).__name__)
    return names


def test_gpu_target_traces_every_fused_kernel_and_the_table_names_only_what_is_there():
    """The dispatch truth test: on an fp8 GPU target every op runs its chosen kernel in the
    graph, and every kernel the manifest's table names is in the exported program."""
    from collections import Counter

    from ir.targets import get_target
    from lowering.lowered import ir_ops_in
    from lowering.op_table import op_table, runnable_impls

    gm = torch.fx.symbolic_trace(FusedStep())
    counts = ir_ops_in(gm)
    runnable, why = runnable_impls(counts, get_target("h100"))
    assert "reference" not in runnable.values(), why
    mode = FakeTensorMode()
    args = fused_step_inputs(mode)
    launches: dict = {}
    with mode, kernels_in_graph(gm, runnable, launches):
        exported = export(gm, args, strict=False).graph_module
    assert "kiln." not in exported.code  # nothing left as a call back into Python
    rows = op_table(Counter(counts), runnable, launches, [], why)
    in_graph = triton_kernels_in(exported)
    for row in rows:
        assert row["runs"] == "in graph" and row["kernels"], row
        for name in row["kernels"]:
            if name == "aten._scaled_mm":
                assert "torch.ops.aten._scaled_mm" in exported.code
            else:
                assert name in in_graph, (row, in_graph)
    # 7 tokens, below the pinned max_m: the small-M Triton GEMM, not torch._scaled_mm
    assert {r["op"]: r["implementation"] for r in rows}["scaled_mm"] == "triton"
    assert "_scaled_mm_small_m_kernel" in in_graph
    assert {r["op"]: r["implementation"] for r in rows}["silu_and_mul_quant"] == "helion"
