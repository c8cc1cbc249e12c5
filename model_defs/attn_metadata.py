"""Attention metadata: an explicit input of every forward, never a global."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils._pytree as pytree


@dataclass
class AttnMetadata:
    """Where this step's tokens go in the paged KV cache and what they attend to.

    B sequences, T tokens (flat batch). Sequence i's query tokens are rows
    query_start_loc[i]:query_start_loc[i+1]; they are the last of its seq_lens[i] tokens.
    """

    slot_mapping: torch.Tensor  # [T] int64; -1 = padding token (KV not written)
    block_tables: torch.Tensor  # [B, max_blocks_per_seq] int32
    seq_lens: torch.Tensor  # [B] int32, context length including this step's tokens
    query_start_loc: torch.Tensor  # [B + 1] int32, cumulative query lengths


pytree.register_dataclass(AttnMetadata)


def pad_to_bucket(input_ids, positions, attn: AttnMetadata, buckets):
    """Pad the step's T up to the smallest bucket >= T (the sizes a graph was built or
    captured for). Padding tokens are id 0 at position 0 with slot -1: no KV is written and
    no sequence owns their rows, so slicing the output back to T drops them."""
    n = input_ids.shape[0]
    padded = next((b for b in buckets if b >= n), n)
    if padded == n:
        return input_ids, positions, attn
    pad = input_ids.new_zeros(padded - n)
    slots = torch.cat((attn.slot_mapping, attn.slot_mapping.new_full((padded - n,), -1)))
    meta = AttnMetadata(slots, attn.block_tables, attn.seq_lens, attn.query_start_loc)
    return torch.cat((input_ids, pad)), torch.cat((positions, pad.to(positions.dtype))), meta


def graph_inputs(input_ids, positions, attn: AttnMetadata, kv_caches) -> dict[str, torch.Tensor]:
    """The step's tensors under the placeholder names a captured graph gives them."""
    named = {
        "input_ids": input_ids,
        "positions": positions,
        "attn_slot_mapping": attn.slot_mapping,
        "attn_block_tables": attn.block_tables,
        "attn_seq_lens": attn.seq_lens,
        "attn_query_start_loc": attn.query_start_loc,
    }
    for layer, (k, v) in enumerate(kv_caches):
        named[f"kv_caches_{layer}_0"], named[f"kv_caches_{layer}_1"] = k, v
    return named
