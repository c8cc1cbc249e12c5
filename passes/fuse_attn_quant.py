"""FuseAttnQuant: attention + flatten + quant_fp8 of its output -> attention_quant (o_proj input)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from passes.base import Fusion, PassContext
from passes.config import PassConfig
from passes.graph import aten, kiln
from passes.pattern import Match, Var, op
from passes.pipeline import register_pass

ATTENTION_ARGS = (
    "q", "k", "v", "k_cache", "v_cache", "slot_mapping", "block_tables", "seq_lens",
    "query_start_loc", "scale", "sliding_window",
)  # fmt: skip


@register_pass
@dataclass(frozen=True)
class FuseAttnQuant(Fusion):
    name = "fuse_attn_quant"
    phase = "quant_fusions"
    description = "attention + quant_fp8 of its output -> attention_quant"
    patterns = (
        op(
            kiln.quant_fp8.default,
            op(
                (aten.reshape.default, aten.view.default, aten.flatten.using_ints),
                op(kiln.attention.default, *map(Var, ATTENTION_ARGS), name="attention"),
                Var("shape"),
                name="flatten",
            ),
            Var("group_size"),
            name="root",
        ),
    )

    def applies(self, cfg: PassConfig) -> bool:
        return cfg.quantization == "fp8"

    def check(self, m: Match, ctx: PassContext) -> bool:
        # attention_quant returns [T, Hq * D]: only a flatten of the heads matches it.
        out = m["flatten"].meta.get("val")
        src = m["attention"].meta.get("val")
        return (
            out is not None
            and src is not None
            and out.dim() == 2
            and str(out.shape[0]) == str(src.shape[0])
        )

    def replace(self, graph: fx.Graph, m: Match, ctx: PassContext) -> dict:
        args = tuple(m[a] for a in ATTENTION_ARGS) + (m["group_size"],)
        return {"root": graph.call_function(kiln.attention_quant.default, args)}
