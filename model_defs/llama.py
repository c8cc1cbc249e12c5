"""Llama 2, 3, 3.1, 3.2 (rope scaling, tied embeddings)."""

from model_defs.config import parse_hf_config
from model_defs.family import ModelFamily

FAMILY = ModelFamily(
    name="llama",
    architectures=("LlamaForCausalLM",),
    parse=lambda raw: parse_hf_config(raw),
)
