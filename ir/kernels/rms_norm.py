"""RMSNorm as a Helion kernel: one row per program, the whole row in registers, fp32 math."""

from __future__ import annotations

from typing import Any

import torch

from ir.kernels.base import KernelCase, needs_cuda, runtime_config
from ir.kernels.helion_util import register_helion_impl, register_helion_kernel

helion: Any = None  # bound to the helion modules on first use (see helion_util.import_helion)
hl: Any = None

NAME = "rms_norm"


def rms_norm_kernel(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, H], weight [H] -> weight * (x / rms(x)).to(x.dtype), as the IR reference rounds."""
    m, n = x.size()
    out = torch.empty([m, n], dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    for tile_m in hl.tile(m):
        xf = x[tile_m, :].to(torch.float32)
        inv_rms = torch.rsqrt(torch.mean(xf * xf, dim=-1) + eps)  # [tile_m]
        normed = (xf * inv_rms[:, None]).to(x.dtype)
        out[tile_m, :] = weight[None, :] * normed
    return out


@register_helion_impl(NAME, needs_cuda, "Helion, row per program")
def rms_norm(run, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x2d = x.reshape(-1, x.shape[-1])  # [T, H]
    out = run(rms_norm_kernel, runtime_config(NAME, x.device.type), x2d, weight, eps)
    return out.reshape(x.shape)


def example_args(device: str, variant: str = "default") -> tuple:
    """Llama-3-8B hidden size (a compile-time constant of the cubin); an odd token count."""
    x = torch.randn(13, 4096, dtype=torch.bfloat16, device=device)
    return x, torch.randn(4096, dtype=torch.bfloat16, device=device), 1e-5


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + 0.1


def cases() -> tuple[KernelCase, ...]:
    x, w = _rand(7, 96), _rand(96, seed=1)
    return (KernelCase("fp32", "default", (x, w, 1e-6)),)


register_helion_kernel(NAME, rms_norm_kernel, example_args, cases=cases)
