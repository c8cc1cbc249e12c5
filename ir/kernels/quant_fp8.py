"""Dynamic fp8 quantization (per token or per group) as a Helion kernel.

x [T, K] is viewed as [T, K // g, g] (g = K per token); one program quantizes one group of
one row: scale = max(amax|x| / FP8_MAX, MIN_SCALE), xq = clamp(x / scale) in e4m3.
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
from ir.ops.quant import check_group_size

helion: Any = None  # bound to the helion modules on first use (see helion_util.import_helion)
hl: Any = None

NAME = "quant_fp8"
# The quant kernels spell FP8_MAX (448.0) and MIN_SCALE (1e-12) as literals: module globals
# would make Helion's generated source import this module. tests/lowering/test_helion_kernels.py
# checks their scales against both constants (a zero row takes the MIN_SCALE floor).


def quant_fp8_kernel(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, K] -> (xq fp8 [T, K], scale fp32 [T, K // group]); group is a positive divisor."""
    m, k = x.size()
    g = hl.specialize(group)
    groups = k // g
    x3 = x.view(m, groups, g)
    xq = torch.empty([m, k], dtype=torch.float8_e4m3fn, device=x.device)
    xq3 = xq.view(m, groups, g)
    scale = torch.empty([m, groups], dtype=torch.float32, device=x.device)
    for tile_m, tile_g in hl.tile([m, groups]):
        xf = x3[tile_m, tile_g, :].to(torch.float32)  # [tile_m, tile_g, g]
        s = torch.clamp(torch.amax(torch.abs(xf), dim=-1) / 448.0, min=1e-12)
        clipped = torch.clamp(xf / s[:, :, None], -448.0, 448.0)
        xq3[tile_m, tile_g, :] = clipped.to(torch.float8_e4m3fn)
        scale[tile_m, tile_g] = s
    return xq, scale


def group_width(k: int, group_size: int) -> int:
    """The kernel's group: the whole row for per-token (group_size 0); checked by the IR op's
    own rule."""
    check_group_size(k, group_size)
    return k if group_size == 0 else group_size


@register_helion_impl(NAME, needs_fp8, "Helion, group per program")
def quant_fp8(run, x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = x.shape[-1]
    g = group_width(k, group_size)
    variant = "per_token" if group_size == 0 else "group128"
    config = variant_config(runtime_config(NAME, x.device.type), variant)
    xq, scale = run(quant_fp8_kernel, config, x.reshape(-1, k), g)
    return xq.reshape(x.shape), scale.reshape(*x.shape[:-1], k // g)


def example_args(device: str, variant: str = "per_token") -> tuple:
    """Llama-3-8B hidden size, bf16 in; per-token and 128-wide groups are separate cubins."""
    x = torch.randn(13, 4096, dtype=torch.bfloat16, device=device)
    return x, 4096 if variant == "per_token" else 128


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + 0.1


def cases() -> tuple[KernelCase, ...]:
    x = _rand(7, 64) * 3
    return (
        KernelCase("per_token", "per_token", (x, 0), launch=(x, 64)),
        KernelCase("group16", "group128", (x, 16), launch=(x, 16)),
    )


register_helion_kernel(
    NAME, quant_fp8_kernel, example_args, ("per_token", "group128"), cases=cases,
    no_triton_interpreter="the interpreter's fp32 -> e4m3 cast rounds ties up and flushes subnormals (torch and the GPU do not)",
)  # fmt: skip
