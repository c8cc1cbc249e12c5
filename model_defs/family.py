"""`ModelFamily`: how one HF model family maps onto the shared decoder.

Weight rules are data, one line each: a regex over HF parameter names, the Kiln parameter it
fills (with `{0}` for the layer index), and how tensor parallelism shards it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from model_defs.config import ModelConfig

# Shard kinds: None = replicated; "q"/"k"/"v" = slices of the fused qkv projection;
# "gate"/"up" = halves of the fused gate_up projection; "row" = split along the input dim.
WeightRule = tuple[str, str, str | None]

LLAMA_WEIGHT_RULES: tuple[WeightRule, ...] = (
    (r"model\.embed_tokens\.weight", "embed_tokens", None),
    (
        r"model\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)",
        "layers.{0}.self_attn.qkv_proj.{1}",
        "q",
    ),
    (
        r"model\.layers\.(\d+)\.self_attn\.k_proj\.(weight|bias)",
        "layers.{0}.self_attn.qkv_proj.{1}",
        "k",
    ),
    (
        r"model\.layers\.(\d+)\.self_attn\.v_proj\.(weight|bias)",
        "layers.{0}.self_attn.qkv_proj.{1}",
        "v",
    ),
    (
        r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight",
        "layers.{0}.self_attn.o_proj.weight",
        "row",
    ),
    (r"model\.layers\.(\d+)\.self_attn\.q_norm\.weight", "layers.{0}.self_attn.q_norm", None),
    (r"model\.layers\.(\d+)\.self_attn\.k_norm\.weight", "layers.{0}.self_attn.k_norm", None),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", "layers.{0}.mlp.gate_up_proj.weight", "gate"),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", "layers.{0}.mlp.gate_up_proj.weight", "up"),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", "layers.{0}.mlp.down_proj.weight", "row"),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", "layers.{0}.input_layernorm", None),
    (
        r"model\.layers\.(\d+)\.post_attention_layernorm\.weight",
        "layers.{0}.post_attention_layernorm",
        None,
    ),
    (r"model\.norm\.weight", "norm", None),
    (r"lm_head\.weight", "lm_head", None),
)

# HF checkpoints sometimes carry buffers that Kiln recomputes.
IGNORED_WEIGHTS = (r".*\.rotary_emb\.inv_freq",)


@dataclass(frozen=True)
class ModelFamily:
    name: str
    architectures: tuple[str, ...]
    parse: Callable[[dict], ModelConfig]
    weight_rules: tuple[WeightRule, ...] = LLAMA_WEIGHT_RULES

    def map_weight(self, hf_name: str) -> tuple[str, str | None] | None:
        """HF name -> (kiln parameter name, shard kind); None if Kiln ignores it."""
        if any(re.fullmatch(p, hf_name) for p in IGNORED_WEIGHTS):
            return None
        for pattern, target, shard in self.weight_rules:
            m = re.fullmatch(pattern, hf_name)
            if m:
                return target.format(*m.groups()), shard
        raise KeyError(hf_name)
