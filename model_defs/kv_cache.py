"""Paged KV cache allocation and sizing."""

from __future__ import annotations

import torch

from kiln.errors import KilnError
from model_defs.config import ModelConfig

KVCaches = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (k, v) [blocks, bs, Hk, D]


def bytes_per_block(cfg: ModelConfig, block_size: int, dtype: torch.dtype, tp_size: int = 1) -> int:
    kv_heads = max(cfg.num_kv_heads // tp_size, 1)
    per_layer = 2 * block_size * kv_heads * cfg.head_dim * dtype.itemsize
    return per_layer * cfg.num_layers


def num_blocks_for_budget(
    cfg: ModelConfig, block_size: int, dtype: torch.dtype, budget_bytes: int, tp_size: int = 1
) -> int:
    n = budget_bytes // bytes_per_block(cfg, block_size, dtype, tp_size)
    if n < 1:
        need = bytes_per_block(cfg, block_size, dtype, tp_size)
        raise KilnError(
            f"KV cache budget of {budget_bytes} bytes holds no block; one block of "
            f"{block_size} tokens needs {need} bytes: raise the KV cache memory"
        )
    return int(n)


def allocate_kv_caches(
    cfg: ModelConfig,
    num_blocks: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device | str,
    tp_size: int = 1,
) -> KVCaches:
    kv_heads = max(cfg.num_kv_heads // tp_size, 1)
    shape = (num_blocks, block_size, kv_heads, cfg.head_dim)
    return [
        (
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(shape, dtype=dtype, device=device),
        )
        for _ in range(cfg.num_layers)
    ]
