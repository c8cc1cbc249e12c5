"""RMSNorm then dynamic fp8 quantization, fused: one row per program, then its groups.

The normed row is rounded to the input dtype before quantizing, exactly as the unfused
reference (rms_norm, then quant_fp8) does. FP8 constants are literals: see quant_fp8.py.
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

NAME = "rms_norm_quant"


def rms_norm_quant_kernel(
    x: torch.Tensor, weight: torch.Tensor, eps: float, group: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, K] -> (xq fp8 [T, K], scale fp32 [T, K // group])."""
    m, k = x.size()
    g = hl.specialize(group)
    groups = k // g
    x3, w2 = x.view(m, groups, g), weight.view(groups, g)
    xq = torch.empty([m, k], dtype=torch.float8_e4m3fn, device=x.device)
    xq3 = xq.view(m, groups, g)
    scale = torch.empty([m, groups], dtype=torch.float32, device=x.device)
    for tile_m in hl.tile(m):
        xf = x[tile_m, :].to(torch.float32)
        inv_rms = torch.rsqrt(torch.mean(xf * xf, dim=-1) + eps)  # [tile_m]
        for tile_g in hl.tile(groups):
            xg = x3[tile_m, tile_g, :].to(torch.float32)  # [tile_m, tile_g, g]
            normed = w2[None, tile_g, :] * (xg * inv_rms[:, None, None]).to(x.dtype)
            nf = normed.to(torch.float32)
            s = torch.clamp(torch.amax(torch.abs(nf), dim=-1) / 448.0, min=1e-12)
            clipped = torch.clamp(nf / s[:, :, None], -448.0, 448.0)
            xq3[tile_m, tile_g, :] = clipped.to(torch.float8_e4m3fn)
            scale[tile_m, tile_g] = s
    return xq, scale


@register_helion_impl(NAME, needs_fp8, "Helion, row per program")
def rms_norm_quant(
    run, x: torch.Tensor, weight: torch.Tensor, eps: float, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    k = x.shape[-1]
    g = group_width(k, group_size)
    variant = "per_token" if group_size == 0 else "group128"
    config = variant_config(runtime_config(NAME, x.device.type), variant)
    xq, scale = run(rms_norm_quant_kernel, config, x.reshape(-1, k), weight, eps, g)
    return xq.reshape(x.shape), scale.reshape(*x.shape[:-1], k // g)


def example_args(device: str, variant: str = "per_token") -> tuple:
    """Llama-3-8B hidden size, bf16; per-token and 128-wide groups are separate cubins."""
    x = torch.randn(13, 4096, dtype=torch.bfloat16, device=device)
    weight = torch.randn(4096, dtype=torch.bfloat16, device=device)
    return x, weight, 1e-5, 4096 if variant == "per_token" else 128


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + 0.1


def cases() -> tuple[KernelCase, ...]:
    x, w = _rand(7, 64) * 3, _rand(64, seed=1)
    return (
        KernelCase("per_token", "per_token", (x, w, 1e-6, 0), launch=(x, w, 1e-6, 64)),
        KernelCase("group16", "group128", (x, w, 1e-6, 16), launch=(x, w, 1e-6, 16)),
    )


register_helion_kernel(
    NAME, rms_norm_quant_kernel, example_args, ("per_token", "group128"), cases=cases,
    no_triton_interpreter="the interpreter's fp32 -> e4m3 cast rounds ties up and flushes subnormals (torch and the GPU do not)",
)  # fmt: skip
