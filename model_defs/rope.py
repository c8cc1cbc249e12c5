"""Rotary cos/sin tables, including Llama-3 and linear rope scaling (HF semantics)."""

from __future__ import annotations

import math

import torch

from kiln.errors import KilnError
from model_defs.config import ModelConfig

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def inv_frequencies(cfg: ModelConfig) -> torch.Tensor:
    """Per-pair inverse frequencies [rot_dim // 2] in fp32, after rope scaling."""
    dim = cfg.rotary_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = cfg.rope_scaling_dict
    kind = scaling.get("rope_type", "default")
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        return _llama3(inv_freq, scaling)
    raise KilnError(
        f"rope_type {kind!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
    )


def _llama3(inv_freq: torch.Tensor, s: dict) -> torch.Tensor:
    factor, low, high = (
        float(s["factor"]),
        float(s["low_freq_factor"]),
        float(s["high_freq_factor"]),
    )
    old_len = float(s["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def cos_sin_cache(cfg: ModelConfig, max_positions: int | None = None) -> torch.Tensor:
    """[max_positions, rot_dim] = [cos | sin] in fp32, the layout `kiln.rotary_embedding` reads."""
    n = max_positions or cfg.max_position_embeddings
    freqs = torch.outer(torch.arange(n, dtype=torch.float32), inv_frequencies(cfg))
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1)
