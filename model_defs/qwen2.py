"""Qwen2 and Qwen2.5: Llama with a bias on the q/k/v projections."""

from model_defs.config import parse_hf_config
from model_defs.family import ModelFamily

FAMILY = ModelFamily(
    name="qwen2",
    architectures=("Qwen2ForCausalLM",),
    parse=lambda raw: parse_hf_config(raw, qkv_bias=True),
)
