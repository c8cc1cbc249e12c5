"""Paged attention for the CPU: decode tokens of all sequences in one batched product.

The reference loops over sequences in Python, which dominates CPU decode at batch 8+. Here
every sequence with one query token (the decodes) is handled together: its KV is gathered
through its block table into [B, S, Hk, D] and masked past its length; sequences with several
query tokens (prefill chunks) go one by one through `scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ir.ops.attention import write_kv
from ir.registry import register_impl


def _cpu_only(target) -> str | None:
    return None if target.device_type == "cpu" else "CPU implementation"


def _gather(cache: torch.Tensor, tables: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B, max_len, Hk, D] of the sequences' KV, in position order (past a length: garbage)."""
    blocks = -(-max_len // cache.shape[1])
    kv = cache[tables[:, :blocks].long()]  # [B, blocks, bs, Hk, D]
    return kv.flatten(1, 2)[:, :max_len]


def _decodes(q, k_cache, v_cache, tables, seq_lens, scale, window):
    """q [B, Hq, D], one query each at position seq_len - 1."""
    b, hq, d = q.shape
    hk = k_cache.shape[2]
    max_len = int(seq_lens.max())
    keys = _gather(k_cache, tables, max_len).float()  # [B, S, Hk, D]
    vals = _gather(v_cache, tables, max_len).float()
    qg = q.float().view(b, hk, hq // hk, d)
    scores = torch.einsum("bhgd,bshd->bhgs", qg, keys) * scale
    pos = torch.arange(max_len)[None, :]
    allowed = pos < seq_lens[:, None]
    if window > 0:
        allowed &= pos > (seq_lens[:, None] - 1 - window)
    scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
    out = torch.einsum("bhgs,bshd->bhgd", scores.softmax(-1), vals)
    return out.reshape(b, hq, d).to(q.dtype)


def _prefill(q, k_cache, v_cache, table, seq_len, scale, window):
    """q [n, Hq, D]: the last n of seq_len tokens, causal over the sequence's KV."""
    n, hq, _ = q.shape
    keys = _gather(k_cache, table[None], seq_len)[0].float()  # [S, Hk, D]
    vals = _gather(v_cache, table[None], seq_len)[0].float()
    group = hq // keys.shape[1]
    q_pos = torch.arange(seq_len - n, seq_len)[:, None]
    k_pos = torch.arange(seq_len)[None, :]
    allowed = k_pos <= q_pos
    if window > 0:
        allowed &= k_pos > q_pos - window
    out = F.scaled_dot_product_attention(
        q.float().transpose(0, 1),  # [Hq, n, D]
        keys.repeat_interleave(group, 1).transpose(0, 1),
        vals.repeat_interleave(group, 1).transpose(0, 1),
        attn_mask=allowed,
        scale=scale,
    )
    return out.transpose(0, 1).to(q.dtype)


@register_impl("attention", "native", _cpu_only, "CPU: batched decodes, SDPA prefill chunks")
def attention(
    q, k, v, k_cache, v_cache, slot_mapping, block_tables, seq_lens, query_start_loc,
    scale, sliding_window,
):  # fmt: skip
    write_kv(k, v, k_cache, v_cache, slot_mapping)
    out = torch.zeros_like(q)
    q_lens = (query_start_loc[1:] - query_start_loc[:-1]).tolist()
    starts = query_start_loc[:-1].tolist()
    dec = [i for i, n in enumerate(q_lens) if n == 1]
    if dec:
        rows = torch.tensor([starts[i] for i in dec])
        idx = torch.tensor(dec)
        out[rows] = _decodes(
            q[rows],
            k_cache,
            v_cache,
            block_tables[idx],
            seq_lens[idx].long(),
            scale,
            sliding_window,
        )
    for i, n in enumerate(q_lens):
        if n > 1:
            s = starts[i]
            out[s : s + n] = _prefill(
                q[s : s + n],
                k_cache,
                v_cache,
                block_tables[i],
                int(seq_lens[i]),
                scale,
                sliding_window,
            )
    return out
