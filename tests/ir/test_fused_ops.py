"""Every fused IR op against the graph of unfused ops it replaces, taken from the registries.

For each fused op its definition gives `unfused`, the computation written with the unfused ops
(`torch.ops.kiln.*`). That function is exported to a graph, the registered fusion passes run
on it, and the test checks that (1) some pass turns the graph into the fused op and (2) the
rewritten graph gives the same outputs and writes the same KV cache as the unfused graph, on
the op's random example inputs. So a pass that wires arguments wrongly, or a fused reference
that drifts from its parts, fails here.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ir.registry import all_ops, get_op
from passes.base import Fusion, PassContext
from passes.config import PassConfig, PassToggles
from passes.graph import op_counts
from passes.manager import apply_pass
from passes.pipeline import default_pipeline


def _fused_ops() -> list[str]:
    """Ops that declare their unfused form, and every op defined among the fused ops."""
    return [op.name for op in all_ops() if op.unfused or op.reference.__module__ == "ir.ops.fused"]


class _Unfused(torch.nn.Module):
    """`fn(*args)` with the tensor arguments as inputs and the rest baked in."""

    def __init__(self, fn, args: tuple):
        super().__init__()
        self.fn, self.args = fn, args
        self.slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]

    def forward(self, *tensors):
        args = list(self.args)
        for i, t in zip(self.slots, tensors, strict=True):
            args[i] = t
        return self.fn(*args)


def _tensors(args: tuple) -> list[torch.Tensor]:
    return [copy.deepcopy(a) for a in args if isinstance(a, torch.Tensor)]


def _fuse(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Run every registered fusion (each one on, whatever its default) in pipeline order."""
    fusions = [p for p in default_pipeline() if isinstance(p, Fusion)]
    toggles = PassToggles(on=frozenset(p.name for p in fusions))
    cfg = PassConfig(quantization="fp8", tp_size=2, toggles=toggles)
    ctx = PassContext(cfg, None, {}, torch.empty(0))
    for p in fusions:
        apply_pass(p, gm, ctx)
    return gm


def _same(a, b) -> None:
    if isinstance(a, (tuple, list)):
        for x, y in zip(a, b, strict=True):
            _same(x, y)
        return
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype == torch.float8_e4m3fn:  # no CPU equality kernel for fp8: compare bytes
        a, b = a.view(torch.uint8), b.view(torch.uint8)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", _fused_ops())
def test_a_fusion_pass_builds_the_op_from_its_unfused_graph(name):
    op = get_op(name)
    where = op.reference.__module__.replace(".", "/") + ".py"
    assert op.unfused is not None, (
        f"fused op kiln.{name} has no unfused graph: pass unfused=<the same computation with "
        f"the ops it replaces> to @ir_op in {where}"
    )
    assert op.example is not None, f"kiln.{name} has no example inputs: add example= in {where}"
    torch.manual_seed(0)
    args = op.example()
    module = _Unfused(op.unfused, args)
    with torch.no_grad():
        gm = torch.export.export(module, tuple(_tensors(args)), strict=False).graph_module
    unfused = copy.deepcopy(gm)
    fused = _fuse(gm)
    found = op_counts(fused)[f"kiln.{name}"]
    assert found == 1, (
        f"no registered fusion pass turned kiln.{name}'s unfused graph into kiln.{name} "
        f"(graph after the passes: {dict(op_counts(fused))}); add the pass in passes/"
    )
    inputs_a, inputs_b = _tensors(args), _tensors(args)
    _same(unfused(*inputs_a), fused(*inputs_b))
    _same(inputs_a, inputs_b)  # inputs the op writes (KV caches) are written alike
