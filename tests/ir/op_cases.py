"""Inputs shared by the IR op tests: rotary caches and random paged-attention batches.

For attention the paged layout is what the op sees; the contiguous per-sequence K/V is what
the naive dense reference uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# (seq_len, q_len): a fresh prefill, a decode, a chunked prefill with history, another decode.
MIXED_BATCH = ((5, 5), (9, 1), (13, 4), (7, 1))


def rope_cache(max_pos: int, rot_dim: int, base: float = 10000.0) -> torch.Tensor:
    """[max_pos, rot_dim] = [cos | sin] of pos * base^(-2i / rot_dim), fp32."""
    inv_freq = base ** (-torch.arange(0, rot_dim, 2, dtype=torch.float64) / rot_dim)
    angles = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float()


@dataclass
class PagedCase:
    q: torch.Tensor  # [T, Hq, D]
    k: torch.Tensor  # [T, Hk, D]
    v: torch.Tensor  # [T, Hk, D]
    k_cache: torch.Tensor  # [num_blocks, block_size, Hk, D]
    v_cache: torch.Tensor
    slot_mapping: torch.Tensor  # [T] int64, -1 for padding rows
    block_tables: torch.Tensor  # [B, max_blocks] int32
    seq_lens: torch.Tensor  # [B] int32
    query_start_loc: torch.Tensor  # [B + 1] int32
    full_k: list[torch.Tensor]  # per sequence [seq_len, Hk, D], contiguous
    full_v: list[torch.Tensor]

    def args(self, scale: float, sliding_window: int) -> tuple:
        """The attention op's positional arguments (caches cloned so a case can be reused)."""
        return (
            self.q,
            self.k,
            self.v,
            self.k_cache.clone(),
            self.v_cache.clone(),
            self.slot_mapping,
            self.block_tables,
            self.seq_lens,
            self.query_start_loc,
            scale,
            sliding_window,
        )


def make_paged_case(
    batch: tuple[tuple[int, int], ...] = MIXED_BATCH,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    head_size: int = 8,
    block_size: int = 4,
    num_pad: int = 2,
    dtype: torch.dtype = torch.float32,
) -> PagedCase:
    """Random case; blocks are shuffled and unused cache slots hold garbage that must not leak."""
    max_blocks = max(-(-s // block_size) for s, _ in batch)
    num_blocks = sum(-(-s // block_size) for s, _ in batch) + 3
    shape = (num_blocks, block_size, num_kv_heads, head_size)
    k_cache, v_cache = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    free = torch.randperm(num_blocks).tolist()
    block_tables = torch.zeros(len(batch), max_blocks, dtype=torch.int32)
    full_k, full_v, slots, new_k, new_v = [], [], [], [], []
    for i, (seq_len, q_len) in enumerate(batch):
        n = -(-seq_len // block_size)
        block_tables[i, :n] = torch.tensor([free.pop() for _ in range(n)])
        kf = torch.randn(seq_len, num_kv_heads, head_size, dtype=dtype)
        vf = torch.randn(seq_len, num_kv_heads, head_size, dtype=dtype)
        full_k.append(kf)
        full_v.append(vf)
        for pos in range(seq_len):
            slot = int(block_tables[i, pos // block_size]) * block_size + pos % block_size
            if pos < seq_len - q_len:  # history: already in the cache
                k_cache.view(-1, num_kv_heads, head_size)[slot] = kf[pos]
                v_cache.view(-1, num_kv_heads, head_size)[slot] = vf[pos]
            else:  # this step's tokens: passed in and written by the op
                slots.append(slot)
                new_k.append(kf[pos])
                new_v.append(vf[pos])
    kv_pad = torch.randn(num_pad, num_kv_heads, head_size, dtype=dtype)
    q_lens = torch.tensor([0] + [q for _, q in batch])
    return PagedCase(
        q=torch.randn(len(slots) + num_pad, num_heads, head_size, dtype=dtype),
        k=torch.cat([torch.stack(new_k), kv_pad]),
        v=torch.cat([torch.stack(new_v), kv_pad.neg()]),
        k_cache=k_cache,
        v_cache=v_cache,
        slot_mapping=torch.tensor(slots + [-1] * num_pad, dtype=torch.int64),
        block_tables=block_tables,
        seq_lens=torch.tensor([s for s, _ in batch], dtype=torch.int32),
        query_start_loc=q_lens.cumsum(0).to(torch.int32),
        full_k=full_k,
        full_v=full_v,
    )


def dense_attention(case: PagedCase, scale: float, sliding_window: int) -> torch.Tensor:
    """Naive per-query, per-head softmax over contiguous K/V (fp64); padding rows stay 0."""
    out = torch.zeros(case.q.shape, dtype=torch.float64)
    group = case.q.shape[1] // case.full_k[0].shape[1]
    for i, (kf, vf) in enumerate(zip(case.full_k, case.full_v, strict=True)):
        start, end = int(case.query_start_loc[i]), int(case.query_start_loc[i + 1])
        seq_len = kf.shape[0]
        for row in range(start, end):
            pos = seq_len - (end - row)  # absolute position of this query token
            first = 0 if sliding_window <= 0 else max(0, pos - sliding_window + 1)
            for h in range(case.q.shape[1]):
                keys = kf[first : pos + 1, h // group].double()  # [S', D]
                vals = vf[first : pos + 1, h // group].double()
                probs = torch.softmax(keys @ case.q[row, h].double() * scale, dim=0)
                out[row, h] = probs @ vals
    return out


def naive_rotary(positions, x, rot_dim, is_neox, base=10000.0):
    """Per element: pair (a, b) at angle pos * base^(-2i/rot_dim) -> (a cos - b sin, b cos + a sin)."""
    out = x.double().clone()
    half = rot_dim // 2
    for t in range(x.shape[0]):
        for i in range(half):
            angle = int(positions[t]) * base ** (-2 * i / rot_dim)
            c, s = math.cos(angle), math.sin(angle)
            a_idx, b_idx = (i, i + half) if is_neox else (2 * i, 2 * i + 1)
            a, b = x[t, :, a_idx].double(), x[t, :, b_idx].double()
            out[t, :, a_idx] = a * c - b * s
            out[t, :, b_idx] = b * c + a * s
    return out


def naive_rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * w over the last dimension, in fp64."""
    xd = x.double()
    return xd / (xd.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w.double()


def naive_silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """gate / (1 + e^-gate) * up, the halves of the last dimension, in fp64."""
    gate, up = x.double().chunk(2, dim=-1)
    return gate / (1 + torch.exp(-gate)) * up
