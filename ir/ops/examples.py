"""Builders for ops' example arguments (`ir_op(..., example=...)`): small, random, non-zero."""

from __future__ import annotations

import torch

T, HQ, HK, D = 5, 4, 2, 16  # tokens, query heads, KV heads, head size of the examples


def rope_cache(max_pos: int, rot_dim: int, base: float = 10000.0) -> torch.Tensor:
    """[max_pos, rot_dim] = [cos | sin] of pos * base^(-2i / rot_dim), fp32."""
    inv_freq = base ** (-torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    angles = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float()


def paged_attention_args(sliding_window: int = 0) -> tuple:
    """`kiln.attention`'s arguments: a prefill of 3 and a decode with history, 1 padding row."""
    from ir.ops.paged_inputs import paged_inputs

    seed = int(torch.randint(0, 2**31, ()).item())  # follows torch.manual_seed
    return paged_inputs(
        [(3, 3), (1, 5)], num_heads=HQ, num_kv_heads=HK, head_size=D, block_size=4,
        dtype=torch.float32, num_padding=1, sliding_window=sliding_window, seed=seed,
    )  # fmt: skip


def rope_args(rot_dim: int = 8, is_neox: bool = True, num_tokens: int = T) -> tuple:
    """`kiln.rotary_embedding`'s arguments: (positions, q, k, cos_sin_cache, is_neox)."""
    positions = torch.randint(0, 64, (num_tokens,))
    q, k = torch.randn(num_tokens, HQ, D), torch.randn(num_tokens, HK, D)
    return positions, q, k, rope_cache(64, rot_dim), is_neox
