"""The loader interface: one implementation per artifact kind, plus the eager model.

A loader turns the model's loaded weights into the forward the runner calls. `Forward` is what
every loader returns, so the start-up never asks which kind it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from model_defs.attn_metadata import AttnMetadata
from model_defs.kv_cache import KVCaches


class Forward:
    """The runner's forward `(input_ids, positions, attn, kv_caches) -> hidden` and the
    matching `compute_logits(hidden) -> fp32 logits`."""

    def __init__(
        self,
        run: Callable,
        compute_logits: Callable[[torch.Tensor], torch.Tensor],
        *,
        key: str | None = None,
        compiles_per_shape: bool = True,
    ):
        self.run, self.compute_logits = run, compute_logits
        self.key = key  # the artifact's cache key; None for the eager model
        # Whether some kernel is compiled on first use of a step shape (a JIT Triton kernel, or
        # a program under torch.compile): CUDA graph warm-up must then run every bucket.
        self.compiles_per_shape = compiles_per_shape

    def __call__(
        self, input_ids: torch.Tensor, positions: torch.Tensor, attn: AttnMetadata, kv: KVCaches
    ) -> torch.Tensor:
        return self.run(input_ids, positions, attn, kv)


class Loader(ABC):
    """Binds what one kind of artifact (or the eager model) needs to the loaded model."""

    # Whether `load` reads the parameters' values (a pass that quantizes or pads them); if not,
    # the weights may still be streaming in while it runs (`runtime/weights.py`).
    reads_weights: bool = False

    @abstractmethod
    def load(self, model: torch.nn.Module, phases: dict[str, float]) -> Forward:
        """The forward over `model`'s weights; times its own steps into `phases`."""

    @abstractmethod
    def describe(self) -> str:
        """One line saying what runs, for the CLI."""
