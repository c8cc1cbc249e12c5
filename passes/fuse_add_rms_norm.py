"""FuseAddRMSNorm: residual add + rms_norm -> fused_add_rms_norm (one read of each input)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from passes.base import Fusion, PassContext
from passes.graph import aten, getitem, kiln
from passes.pattern import Match, Var, op
from passes.pipeline import register_pass


def _same_shape(a: fx.Node, b: fx.Node) -> bool:
    va, vb = a.meta.get("val"), b.meta.get("val")
    return (
        va is not None
        and vb is not None
        and [str(d) for d in va.shape] == [str(d) for d in vb.shape]
        and va.dtype == vb.dtype
    )


@register_pass
@dataclass(frozen=True)
class FuseAddRMSNorm(Fusion):
    name = "fuse_add_rms_norm"
    phase = "fusions"
    description = "residual add + rms_norm -> fused_add_rms_norm"
    patterns = (
        op(
            kiln.rms_norm.default,
            op(aten.add.Tensor, Var("x"), Var("residual"), name="add"),
            Var("weight"),
            Var("eps"),
            name="root",
        ),
    )
    takes_over = ("add",)  # the sum is the next residual

    def check(self, m: Match, ctx: PassContext) -> bool:
        x, residual = m["x"], m["residual"]
        both_nodes = isinstance(x, fx.Node) and isinstance(residual, fx.Node)
        return both_nodes and _same_shape(x, residual)  # no broadcasting adds

    def replace(self, graph: fx.Graph, m: Match, ctx: PassContext) -> dict:
        fused = graph.call_function(
            kiln.fused_add_rms_norm.default, (m["x"], m["residual"], m["weight"], m["eps"])
        )
        return {"root": getitem(graph, fused, 0), "add": getitem(graph, fused, 1)}
