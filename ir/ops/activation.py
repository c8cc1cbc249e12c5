"""Gated activation IR ops."""

import torch
import torch.nn.functional as F

from ir.registry import ir_op


@ir_op("silu_and_mul", example=lambda: (torch.randn(5, 64),))
def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """SwiGLU gate: x is [T, 2*I] = [gate | up]; returns silu(gate) * up, [T, I]."""
    d = x.shape[-1] // 2
    return F.silu(x[..., :d]) * x[..., d:]
