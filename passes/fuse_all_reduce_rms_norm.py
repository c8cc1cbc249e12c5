"""FuseAllReduceRMSNorm: all_reduce + fused_add_rms_norm -> all_reduce_add_rms_norm (TP > 1)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from passes.base import Fusion, PassContext
from passes.config import PassConfig
from passes.graph import kiln
from passes.pattern import Match, Var, op
from passes.pipeline import register_pass


def _pattern(reduced_first: bool):
    reduced = op(kiln.all_reduce.default, Var("x"), Var("group_size"), name="all_reduce")
    a, b = (reduced, Var("residual")) if reduced_first else (Var("residual"), reduced)
    return op(kiln.fused_add_rms_norm.default, a, b, Var("weight"), Var("eps"), name="root")


@register_pass
@dataclass(frozen=True)
class FuseAllReduceRMSNorm(Fusion):
    name = "fuse_all_reduce_rms_norm"
    phase = "collectives"
    description = "all_reduce + fused_add_rms_norm -> all_reduce_add_rms_norm (TP > 1)"
    patterns = (_pattern(True), _pattern(False))  # the add is commutative (and exact)

    def applies(self, cfg: PassConfig) -> bool:
        return cfg.tp_size > 1

    def replace(self, graph: fx.Graph, m: Match, ctx: PassContext) -> dict:
        args = (m["x"], m["residual"], m["weight"], m["eps"], m["group_size"])
        return {"root": graph.call_function(kiln.all_reduce_add_rms_norm.default, args)}
