"""A kernel with an in-graph form is traced into the exported program (a Triton launch node,
which AOTInductor compiles into the package), not left as a call back into Python. Runs on the
CPU: export traces with fake CUDA tensors and nothing launches."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.export import export

import ir.kernels.attention  # noqa: F401  (registers the Triton implementation)
from ir.kernels.attention_inputs import paged_inputs
from lowering.lowered import kernels_in_graph

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
    return [op.name for op in all_ops() if any(i.in_graph for i in op.impls)]


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

    impl = next(i for i in get_op(op).impls if i.in_graph)
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
