"""Turns one scheduled step into model inputs, runs the model, returns logits to sample from."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from model_defs.kv_cache import KVCaches
from model_defs.step_inputs import StepSeq, prepare_inputs


class ModelRunner:
    """Runs a forward function (eager module or compiled artifact) over the paged KV cache."""

    def __init__(
        self,
        forward: Callable,
        compute_logits: Callable,
        kv_caches: KVCaches,
        block_size: int,
        device: torch.device | str,
    ):
        self.forward, self.compute_logits = forward, compute_logits
        self.kv_caches, self.block_size, self.device = kv_caches, block_size, torch.device(device)
        self.graphs = None  # a CUDAGraphRunner replays steps when set (GPU)

    @torch.inference_mode()
    def execute(self, batch: Sequence[StepSeq]) -> torch.Tensor:
        """Logits [N, V] (fp32) for the sequences with needs_logits, in batch order."""
        if self.graphs is not None:
            return self.graphs.execute(batch, self.block_size)
        inp = prepare_inputs(batch, self.block_size, self.device)
        hidden = self.forward(inp.input_ids, inp.positions, inp.attn, self.kv_caches)
        return self.compute_logits(hidden.index_select(0, inp.logits_indices))
