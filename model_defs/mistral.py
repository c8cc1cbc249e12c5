"""Mistral: Llama with sliding-window attention."""

from model_defs.config import parse_hf_config
from model_defs.family import ModelFamily

FAMILY = ModelFamily(
    name="mistral",
    architectures=("MistralForCausalLM",),
    parse=lambda raw: parse_hf_config(raw),
)
