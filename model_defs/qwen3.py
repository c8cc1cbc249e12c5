"""Qwen3: per-head RMSNorm on q and k before rotary; explicit head_dim."""

from model_defs.config import parse_hf_config
from model_defs.family import ModelFamily

FAMILY = ModelFamily(
    name="qwen3",
    architectures=("Qwen3ForCausalLM",),
    parse=lambda raw: parse_hf_config(raw, qk_norm=True),
)
