"""FuseNormQuant: rms_norm (or fused_add_rms_norm) + quant_fp8 -> rms_norm_quant
(or fused_add_rms_norm_quant), so the normed activation is written once, in fp8."""

from __future__ import annotations

import operator
from dataclasses import dataclass

from torch import fx

from passes.base import Fusion, PassContext
from passes.config import PassConfig
from passes.graph import getitem, kiln
from passes.pattern import Match, Var, op
from passes.pipeline import register_pass


@register_pass
@dataclass(frozen=True)
class FuseNormQuant(Fusion):
    name = "fuse_norm_quant"
    phase = "quant_fusions"
    description = "rms_norm / fused_add_rms_norm + quant_fp8 -> rms_norm_quant / ..._quant"
    patterns = (
        op(
            kiln.quant_fp8.default,
            op(kiln.rms_norm.default, Var("x"), Var("weight"), Var("eps")),
            Var("group_size"),
            name="root",
        ),
        op(
            kiln.quant_fp8.default,
            op(
                operator.getitem,
                op(
                    kiln.fused_add_rms_norm.default,
                    Var("x"),
                    Var("residual"),
                    Var("weight"),
                    Var("eps"),
                    name="norm",
                ),
                0,
            ),
            Var("group_size"),
            name="root",
        ),
    )
    takes_over = ("norm",)  # its second output, the new residual

    def applies(self, cfg: PassConfig) -> bool:
        return cfg.quantization == "fp8"

    def replace(self, graph: fx.Graph, m: Match, ctx: PassContext) -> dict:
        if "norm" not in m.bindings:
            args = (m["x"], m["weight"], m["eps"], m["group_size"])
            return {"root": graph.call_function(kiln.rms_norm_quant.default, args)}
        args = (m["x"], m["residual"], m["weight"], m["eps"], m["group_size"])
        fused = graph.call_function(kiln.fused_add_rms_norm_quant.default, args)
        xq, scale, residual = (getitem(graph, fused, i) for i in range(3))
        return {"root": (xq, scale), "norm": (None, residual)}
