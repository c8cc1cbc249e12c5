"""SwiGLU gate then dynamic fp8 quantization, fused: one (row, group) per program.

silu(gate) * up rounds to the input dtype before quantizing, as the unfused reference does.
FP8 constants are literals: see quant_fp8.py.
"""

from __future__ import annotations

from typing import Any

import torch

from ir.kernels.base import (
    KernelCase,
    needs_fp8,
    runtime_config,
    variant_config,
)
from ir.kernels.helion_util import register_helion_impl, register_helion_kernel
from ir.kernels.quant_fp8 import group_width

helion: Any = None  # bound to the helion modules on first use (see helion_util.import_helion)
hl: Any = None

NAME = "silu_and_mul_quant"


def silu_and_mul_quant_kernel(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, 2I] = [gate | up] -> (xq fp8 [T, I], scale fp32 [T, I // group])."""
    m, n = x.size()
    d = n // 2
    g = hl.specialize(group)
    groups = d // g
    halves = x.view(m, 2, groups, g)  # [T, gate|up, groups, g]
    xq = torch.empty([m, d], dtype=torch.float8_e4m3fn, device=x.device)
    xq3 = xq.view(m, groups, g)
    scale = torch.empty([m, groups], dtype=torch.float32, device=x.device)
    for tile_m, tile_g in hl.tile([m, groups]):
        gate = halves[tile_m, 0, tile_g, :].to(torch.float32)
        up = halves[tile_m, 1, tile_g, :]
        act = ((gate * torch.sigmoid(gate)).to(x.dtype) * up).to(torch.float32)
        s = torch.clamp(torch.amax(torch.abs(act), dim=-1) / 448.0, min=1e-12)
        clipped = torch.clamp(act / s[:, :, None], -448.0, 448.0)
        xq3[tile_m, tile_g, :] = clipped.to(torch.float8_e4m3fn)
        scale[tile_m, tile_g] = s
    return xq, scale


@register_helion_impl(NAME, needs_fp8, "Helion, group per program")
def silu_and_mul_quant(run, x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = x.shape[-1] // 2
    g = group_width(d, group_size)
    variant = "per_token" if group_size == 0 else "group128"
    config = variant_config(runtime_config(NAME, x.device.type), variant)
    xq, scale = run(silu_and_mul_quant_kernel, config, x.reshape(-1, 2 * d), g)
    return xq.reshape(*x.shape[:-1], d), scale.reshape(*x.shape[:-1], d // g)


def example_args(device: str, variant: str = "per_token") -> tuple:
    """Llama-3-8B intermediate size 14336 (112 groups of 128); an odd token count."""
    x = torch.randn(13, 2 * 14336, dtype=torch.bfloat16, device=device)
    return x, 14336 if variant == "per_token" else 128


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + 0.1


def cases() -> tuple[KernelCase, ...]:
    x = _rand(7, 128) * 3
    return (
        KernelCase("per_token", "per_token", (x, 0), launch=(x, 64)),
        KernelCase("group16", "group128", (x, 16), launch=(x, 16)),
    )


register_helion_kernel(
    NAME, silu_and_mul_quant_kernel, example_args, ("per_token", "group128"), cases=cases,
    no_triton_interpreter="the interpreter's fp32 -> e4m3 cast rounds ties up and flushes subnormals (torch and the GPU do not)",
)  # fmt: skip
