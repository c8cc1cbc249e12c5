"""One scheduled step as model inputs: token ids, positions and paged-attention metadata.

The runner builds these for every step; the pass checks build them to run a graph on a
realistic step. They belong to the model's calling convention, not to either caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from model_defs.attn_metadata import AttnMetadata


@dataclass(frozen=True)
class StepSeq:
    """One sequence's share of a step: run `token_ids` at positions start.., sample if asked."""

    token_ids: Sequence[int]
    start: int
    block_table: Sequence[int]
    needs_logits: bool


@dataclass
class StepInputs:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    attn: AttnMetadata
    logits_indices: torch.Tensor  # [N] rows of hidden whose logits are needed


def prepare_inputs(batch: Sequence[StepSeq], block_size: int, device) -> StepInputs:
    ids, pos, slots, seq_lens, qsl, logits_idx = [], [], [], [], [0], []
    max_blocks = max(len(s.block_table) for s in batch)
    tables = torch.zeros((len(batch), max_blocks), dtype=torch.int32)
    for i, s in enumerate(batch):
        n = len(s.token_ids)
        ids.extend(s.token_ids)
        for p in range(s.start, s.start + n):
            pos.append(p)
            slots.append(s.block_table[p // block_size] * block_size + p % block_size)
        tables[i, : len(s.block_table)] = torch.tensor(s.block_table, dtype=torch.int32)
        seq_lens.append(s.start + n)
        qsl.append(qsl[-1] + n)
        if s.needs_logits:
            logits_idx.append(qsl[-1] - 1)

    def t(x, dtype):
        return torch.tensor(x, dtype=dtype).to(device, non_blocking=True)

    attn = AttnMetadata(
        slot_mapping=t(slots, torch.int64),
        block_tables=tables.to(device),
        seq_lens=t(seq_lens, torch.int32),
        query_start_loc=t(qsl, torch.int32),
    )
    return StepInputs(t(ids, torch.int64), t(pos, torch.int64), attn, t(logits_idx, torch.int64))
