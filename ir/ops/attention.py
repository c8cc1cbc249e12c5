"""Paged attention IR op: writes K/V into the paged cache, then attends causally over it."""

import torch

from ir.ops.examples import paged_attention_args
from ir.registry import ir_op


def _fake_attention(
    q,
    k,
    v,
    k_cache,
    v_cache,
    slot_mapping,
    block_tables,
    seq_lens,
    query_start_loc,
    scale,
    sliding_window,
):
    return torch.empty_like(q)


def write_kv(k, v, k_cache, v_cache, slot_mapping) -> None:
    """Scatter k/v [T, Hk, D] into the caches [num_blocks, block_size, Hk, D] at `slot_mapping`.

    A negative slot marks a padding token and is skipped.
    """
    valid = slot_mapping >= 0
    slots = slot_mapping[valid]
    k_cache.view(-1, *k_cache.shape[2:])[slots] = k[valid].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[slots] = v[valid].to(v_cache.dtype)


@ir_op(
    "attention",
    mutates_args=("k_cache", "v_cache"),
    fake=_fake_attention,
    syncs_host=True,
    example=paged_attention_args,
)
def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    sliding_window: int,
) -> torch.Tensor:
    """Causal GQA attention over a paged KV cache, for a mixed prefill+decode batch.

    q [T, Hq, D], k/v [T, Hk, D]; caches [num_blocks, block_size, Hk, D]. Sequence i owns query
    rows query_start_loc[i]:query_start_loc[i+1], the last rows of its seq_lens[i] tokens; its
    KV lives in the blocks block_tables[i]. K/V of this step are written first (slot -1 = skip).
    sliding_window > 0 limits each query to that many most recent keys (itself included).
    """
    write_kv(k, v, k_cache, v_cache, slot_mapping)
    num_heads, head_size = q.shape[1], q.shape[2]
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    out = torch.zeros_like(q)
    for i in range(seq_lens.shape[0]):
        start, end = int(query_start_loc[i]), int(query_start_loc[i + 1])
        seq_len, q_len = int(seq_lens[i]), end - start
        if q_len == 0:
            continue
        num_blocks = -(-seq_len // block_size)
        blocks = block_tables[i, :num_blocks].long()
        keys = k_cache[blocks].reshape(-1, num_kv_heads, head_size)[:seq_len].float()
        vals = v_cache[blocks].reshape(-1, num_kv_heads, head_size)[:seq_len].float()
        group = num_heads // num_kv_heads
        keys = keys.repeat_interleave(group, dim=1)  # [S, Hq, D]
        vals = vals.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q[start:end].float(), keys) * scale
        q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)[:, None]
        k_pos = torch.arange(seq_len, device=q.device)[None, :]
        allowed = k_pos <= q_pos
        if sliding_window > 0:
            allowed &= k_pos > q_pos - sliding_window
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = scores.softmax(dim=-1)
        out[start:end] = torch.einsum("hqk,khd->qhd", probs, vals).to(q.dtype)
    return out
