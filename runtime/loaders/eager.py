"""The eager model as a loader: the module itself, or a forward built from it by a transform
the caller supplies (the CLI passes the captured graph after the passes, `--passes`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from kiln.timing import timed
from runtime.loaders.base import Forward, Loader


class EagerLoader(Loader):
    def __init__(self, transform: Callable[[torch.nn.Module], Callable] | None = None):
        self.transform = transform
        self.reads_weights = transform is not None  # the passes may quantize or pad them

    def load(self, model: torch.nn.Module, phases: dict[str, float]) -> Forward:
        device = next(model.parameters()).device
        if device.type == "cuda":
            _bind_cuda_kernels()
        if self.transform is None:
            return Forward(model, model.compute_logits)
        with timed(phases, "compile"):
            run = self.transform(model)
        return Forward(run, model.compute_logits)

    def describe(self) -> str:
        what = "the captured graph after the passes" if self.transform else "the eager reference"
        return f"running {what} (no compiled artifact; `kiln compile` builds one)"


def _bind_cuda_kernels() -> None:
    """Eager CUDA calls of IR ops run the kernels the dispatch table chooses (registry-bound)."""
    from ir.registry import bind_for

    bind_for("cuda")
