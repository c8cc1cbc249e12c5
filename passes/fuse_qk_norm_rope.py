"""FuseQKNormRope: Qwen3's per-head q/k rms_norm + rotary_embedding -> qk_norm_rope."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from passes.base import Fusion, PassContext
from passes.graph import kiln
from passes.pattern import Match, Var, op
from passes.pipeline import register_pass


@register_pass
@dataclass(frozen=True)
class FuseQKNormRope(Fusion):
    name = "fuse_qk_norm_rope"
    phase = "fusions"
    description = "per-head q/k rms_norm + rotary_embedding -> qk_norm_rope (Qwen3)"
    patterns = (
        op(
            kiln.rotary_embedding.default,
            Var("positions"),
            op(kiln.rms_norm.default, Var("q"), Var("q_weight"), Var("eps")),
            op(kiln.rms_norm.default, Var("k"), Var("k_weight"), Var("eps")),  # same eps
            Var("cos_sin_cache"),
            Var("is_neox"),
            name="root",
        ),
    )

    def replace(self, graph: fx.Graph, m: Match, ctx: PassContext) -> dict:
        args = ("positions", "q", "k", "q_weight", "k_weight", "eps", "cos_sin_cache", "is_neox")
        fused = graph.call_function(kiln.qk_norm_rope.default, tuple(m[a] for a in args))
        return {"root": fused}  # same (q, k) tuple as rotary_embedding
