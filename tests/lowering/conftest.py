"""Lowering tests run Helion kernels in interpret mode on CPU hosts.

Helion reads HELION_INTERPRET when a kernel is built (its Settings' default), not at import,
so setting it here (before any kernel is built) is enough. On a CUDA host the `gpu` tests run
the kernels for real, so the variable is left alone there.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("HELION_INTERPRET", "1")


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Tolerances by dtype: one bf16/fp16 ulp-ish step; fp32 allows reordering of sums."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


@pytest.fixture
def rand():
    """Random non-zero tensors from a seeded generator."""
    gen = torch.Generator().manual_seed(1234)

    def make(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) + 0.1).to(dtype)

    return make
