"""Residual add + RMSNorm as one Helion kernel: one row per program, fp32 math."""

from __future__ import annotations

from typing import Any

import torch

from ir.kernels.base import KernelCase, needs_cuda, runtime_config
from ir.kernels.helion_util import register_helion_impl, register_helion_kernel

helion: Any = None  # bound to the helion modules on first use (see helion_util.import_helion)
hl: Any = None

NAME = "fused_add_rms_norm"


def fused_add_rms_norm_kernel(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual [T, H] -> (rms_norm(x + residual), x + residual); the sum rounds first."""
    m, n = x.size()
    out = torch.empty([m, n], dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    new_residual = torch.empty_like(x)
    for tile_m in hl.tile(m):
        summed = x[tile_m, :] + residual[tile_m, :]
        new_residual[tile_m, :] = summed
        sf = summed.to(torch.float32)
        inv_rms = torch.rsqrt(torch.mean(sf * sf, dim=-1) + eps)  # [tile_m]
        out[tile_m, :] = weight[None, :] * (sf * inv_rms[:, None]).to(x.dtype)
    return out, new_residual


@register_helion_impl(NAME, needs_cuda, "Helion, row per program")
def fused_add_rms_norm(
    run, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = x.shape[-1]
    config = runtime_config(NAME, x.device.type)
    out, new_residual = run(
        fused_add_rms_norm_kernel,
        config,
        x.reshape(-1, hidden),
        residual.reshape(-1, hidden),
        weight,
        eps,
    )
    return out.reshape(x.shape), new_residual.reshape(x.shape)


def example_args(device: str, variant: str = "default") -> tuple:
    """Llama-3-8B hidden size (a compile-time constant of the cubin); an odd token count."""
    x = torch.randn(13, 4096, dtype=torch.bfloat16, device=device)
    residual = torch.randn(13, 4096, dtype=torch.bfloat16, device=device)
    return x, residual, torch.randn(4096, dtype=torch.bfloat16, device=device), 1e-5


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + 0.1


def cases() -> tuple[KernelCase, ...]:
    args = (_rand(7, 80), _rand(7, 80, seed=1), _rand(80, seed=2), 1e-6)
    return (KernelCase("fp32", "default", args),)


register_helion_kernel(NAME, fused_add_rms_norm_kernel, example_args, cases=cases)
