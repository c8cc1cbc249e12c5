"""RMSNorm IR ops."""

import torch

from ir.registry import ir_op


@ir_op("rms_norm", example=lambda: (torch.randn(5, 32), torch.randn(32), 1e-6))
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension, computed in fp32: x / rms(x) * weight."""
    orig_dtype = x.dtype
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * xf.to(orig_dtype)


def _add_then_norm(x, residual, weight, eps):
    new_residual = x + residual
    return torch.ops.kiln.rms_norm(new_residual, weight, eps), new_residual


@ir_op(
    "fused_add_rms_norm",
    example=lambda: (torch.randn(5, 32), torch.randn(5, 32), torch.randn(32), 1e-6),
    unfused=_add_then_norm,
)
def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """residual' = x + residual; returns (rms_norm(residual'), residual')."""
    new_residual = x + residual
    return rms_norm.reference(new_residual, weight, eps), new_residual
