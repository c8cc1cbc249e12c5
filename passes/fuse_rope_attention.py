"""FuseRopeAttention: rotary_embedding feeding attention -> rope_attention (rotate in the KV write)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from passes.base import Fusion, PassContext
from passes.graph import kiln
from passes.pattern import Match, Var, op, out
from passes.pipeline import register_pass

ROPE_ARGS = ("positions", "q", "k", "cos_sin_cache", "is_neox")
CACHE_ARGS = (
    "k_cache", "v_cache", "slot_mapping", "block_tables", "seq_lens", "query_start_loc",
    "scale", "sliding_window",
)  # fmt: skip

# One rotary_embedding node whose two outputs are attention's q and k: a diamond.
ROPE = op(kiln.rotary_embedding.default, *map(Var, ROPE_ARGS), name="rope")


@register_pass
@dataclass(frozen=True)
class FuseRopeAttention(Fusion):
    name = "fuse_rope_attention"
    description = "rotary_embedding -> attention => rope_attention (off: not measured faster)"
    phase = "fusions"
    default_on = False
    patterns = (
        op(
            kiln.attention.default,
            out(ROPE, 0),
            out(ROPE, 1),
            Var("v"),
            *map(Var, CACHE_ARGS),
            name="root",
        ),
    )

    def replace(self, graph: fx.Graph, m: Match, ctx: PassContext) -> dict:
        positions, q, k, cache, is_neox = (m[a] for a in ROPE_ARGS)
        args = (positions, q, k, m["v"], cache, is_neox, *(m[a] for a in CACHE_ARGS))
        return {"root": graph.call_function(kiln.rope_attention.default, args)}
