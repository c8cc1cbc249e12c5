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
