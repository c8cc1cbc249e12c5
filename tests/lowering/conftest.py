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


def close_quant(actual: tuple, expected: tuple) -> None:
    """fp8 (xq, scale, ...) against the reference: scales to ~1e-2, dequantized values to one
    e4m3 step (3 mantissa bits: 1/8 relative), other outputs by `close`."""
    from ir.ops.quant import dequant_fp8

    (xq, scale, *rest), (ref_xq, ref_scale, *ref_rest) = actual, expected
    assert xq.dtype == ref_xq.dtype == torch.float8_e4m3fn and xq.shape == ref_xq.shape
    assert scale.shape == ref_scale.shape and scale.dtype == torch.float32
    torch.testing.assert_close(scale, ref_scale, rtol=1e-2, atol=1e-12)
    got, want = dequant_fp8(xq, scale), dequant_fp8(ref_xq, ref_scale)
    step = ref_scale.amax().item()  # values near zero round on an absolute grid
    torch.testing.assert_close(got, want, rtol=0.13, atol=step)
    for a, e in zip(rest, ref_rest, strict=True):
        close(a, e)
