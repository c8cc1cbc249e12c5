"""Random paged-attention inputs for a mixed batch: examples for cross-compiling and tests."""

from __future__ import annotations

import torch


def paged_inputs(
    seqs: list[tuple[int, int]],
    *,
    num_heads: int,
    num_kv_heads: int,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
    num_padding: int = 0,
    sliding_window: int = 0,
    seed: int = 0,
) -> tuple:
    """Arguments of `kiln.attention` for sequences given as (query_len, seq_len) pairs.

    The cache holds random earlier context for every sequence, blocks are assigned in a
    shuffled order (so block tables are not the identity), and `num_padding` trailing tokens
    have slot -1 and belong to no sequence, as the runner's padded batches do.
    """
    gen = torch.Generator().manual_seed(seed)
    num_tokens = sum(q for q, _ in seqs) + num_padding
    max_blocks = max(-(-s // block_size) for _, s in seqs)
    num_blocks = sum(-(-s // block_size) for _, s in seqs) + 1
    order = torch.randperm(num_blocks, generator=gen).tolist()
    block_tables = torch.zeros(len(seqs), max_blocks, dtype=torch.int32)
    slots, starts = [], [0]
    for i, (q_len, seq_len) in enumerate(seqs):
        owned = [order.pop() for _ in range(-(-seq_len // block_size))]
        block_tables[i, : len(owned)] = torch.tensor(owned, dtype=torch.int32)
        for pos in range(seq_len - q_len, seq_len):
            slots.append(owned[pos // block_size] * block_size + pos % block_size)
        starts.append(starts[-1] + q_len)
    slots += [-1] * num_padding

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    cache_shape = (num_blocks, block_size, num_kv_heads, head_size)
    args = (
        randn(num_tokens, num_heads, head_size),  # q
        randn(num_tokens, num_kv_heads, head_size),  # k
        randn(num_tokens, num_kv_heads, head_size),  # v
        randn(*cache_shape),  # k_cache: random earlier context
        randn(*cache_shape),  # v_cache
        torch.tensor(slots, dtype=torch.int64),
        block_tables,
        torch.tensor([s for _, s in seqs], dtype=torch.int32),
        torch.tensor(starts, dtype=torch.int32),
    )
    moved = tuple(a.to(device) for a in args)
    return (*moved, head_size**-0.5, sliding_window)
