"""SwiGLU gate as a Helion kernel: silu(gate) * up over 2-D tiles of [T, I]."""

from __future__ import annotations

from typing import Any

import torch

from ir.kernels.base import KernelCase, needs_cuda, runtime_config
from ir.kernels.helion_util import register_helion_impl, register_helion_kernel

helion: Any = None  # bound to the helion modules on first use (see helion_util.import_helion)
hl: Any = None

NAME = "silu_and_mul"


def silu_and_mul_kernel(x: torch.Tensor) -> torch.Tensor:
    """x [T, 2I] = [gate | up] -> silu(gate) * up [T, I]; silu rounds to x.dtype first."""
    m, n = x.size()
    d = n // 2
    halves = x.view(m, 2, d)  # [T, 2, I]: halves[:, 0] = gate, halves[:, 1] = up
    out = torch.empty([m, d], dtype=x.dtype, device=x.device)
    for tile_m, tile_d in hl.tile([m, d]):
        gate = halves[tile_m, 0, tile_d].to(torch.float32)
        up = halves[tile_m, 1, tile_d]
        out[tile_m, tile_d] = (gate * torch.sigmoid(gate)).to(x.dtype) * up
    return out


@register_helion_impl(NAME, needs_cuda, "Helion, 2-D tiles")
def silu_and_mul(run, x: torch.Tensor) -> torch.Tensor:
    x2d = x.reshape(-1, x.shape[-1])  # [T, 2I]
    out = run(silu_and_mul_kernel, runtime_config(NAME, x.device.type), x2d)
    return out.reshape(*x.shape[:-1], x.shape[-1] // 2)


def example_args(device: str, variant: str = "default") -> tuple:
    """Llama-3-8B intermediate size 14336; an odd token count."""
    return (torch.randn(13, 2 * 14336, dtype=torch.bfloat16, device=device),)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + 0.1


def cases() -> tuple[KernelCase, ...]:
    return (KernelCase("fp32", "default", (_rand(7, 144),)),)


register_helion_kernel(NAME, silu_and_mul_kernel, example_args, cases=cases)
