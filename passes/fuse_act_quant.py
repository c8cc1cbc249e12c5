"""FuseActQuant: silu_and_mul + quant_fp8 -> silu_and_mul_quant (the MLP's down_proj input)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from passes.base import Fusion, PassContext
from passes.config import PassConfig
from passes.graph import kiln
from passes.pattern import Match, Var, op
from passes.pipeline import register_pass


@register_pass
@dataclass(frozen=True)
class FuseActQuant(Fusion):
    name = "fuse_act_quant"
    phase = "quant_fusions"
    description = "silu_and_mul + quant_fp8 -> silu_and_mul_quant"
    patterns = (
        op(
            kiln.quant_fp8.default,
            op(kiln.silu_and_mul.default, Var("x")),
            Var("group_size"),
            name="root",
        ),
    )

    def applies(self, cfg: PassConfig) -> bool:
        return cfg.quantization == "fp8"

    def replace(self, graph: fx.Graph, m: Match, ctx: PassContext) -> dict:
        args = (m["x"], m["group_size"])
        return {"root": graph.call_function(kiln.silu_and_mul_quant.default, args)}
