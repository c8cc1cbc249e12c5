"""Rotary position embedding as Helion kernels: neox (rotate halves) and gpt-j (rotate pairs).

Both rotate only the first rot_dim features of each head (partial rotary) and copy the rest.
Heads are reshaped on the host so the rotated parts are plain indices, not slices:
neox views a head as [D // half, half] (chunks 0 and 1 rotate), gpt-j as [D // 2, 2]
(pairs below half rotate). The head size and rot_dim are compile-time constants.
"""

from __future__ import annotations

from typing import Any

import torch

from ir.kernels.base import (
    KernelCase,
    KernelSpec,
    needs_cuda,
    register_kernel,
    runtime_config,
    variant_config,
)
from ir.kernels.helion_util import helion_plain_source, register_helion_impl
from kiln.errors import KilnError

helion: Any = None  # bound to the helion modules on first use (see helion_util.import_helion)
hl: Any = None

NAME = "rotary_embedding"


def rotary_neox_kernel(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [T, Hq, D], k [T, Hk, D]: rotate halves of the first rot_dim features; fp32 math."""
    t, hq, d = q.size()
    hk = k.size(1)
    d = hl.specialize(d)
    half = hl.specialize(cos_sin_cache.size(1)) // 2
    chunks = d // half
    cache3 = cos_sin_cache.view(-1, 2, half)  # [P, cos|sin, half]
    q4, k4 = q.view(t, hq, chunks, half), k.view(t, hk, chunks, half)
    out_q, out_k = torch.empty_like(q), torch.empty_like(k)
    oq4, ok4 = out_q.view(t, hq, chunks, half), out_k.view(t, hk, chunks, half)
    for tile_t in hl.tile(t):
        token_pos = positions[tile_t]
        for tile_j in hl.tile(half):
            cos = cache3[token_pos, 0, tile_j][:, None, :]  # [tile_t, 1, tile_j]
            sin = cache3[token_pos, 1, tile_j][:, None, :]
            q1 = q4[tile_t, :, 0, tile_j].to(torch.float32)
            q2 = q4[tile_t, :, 1, tile_j].to(torch.float32)
            oq4[tile_t, :, 0, tile_j] = (q1 * cos - q2 * sin).to(q.dtype)
            oq4[tile_t, :, 1, tile_j] = (q2 * cos + q1 * sin).to(q.dtype)
            k1 = k4[tile_t, :, 0, tile_j].to(torch.float32)
            k2 = k4[tile_t, :, 1, tile_j].to(torch.float32)
            ok4[tile_t, :, 0, tile_j] = (k1 * cos - k2 * sin).to(k.dtype)
            ok4[tile_t, :, 1, tile_j] = (k2 * cos + k1 * sin).to(k.dtype)
        for tile_c in hl.tile(2, chunks):  # features past rot_dim: copied
            for tile_j in hl.tile(half):
                oq4[tile_t, :, tile_c, tile_j] = q4[tile_t, :, tile_c, tile_j]
                ok4[tile_t, :, tile_c, tile_j] = k4[tile_t, :, tile_c, tile_j]
    return out_q, out_k


def rotary_gptj_kernel(
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """q [T, Hq, D], k [T, Hk, D]: rotate interleaved pairs of the first rot_dim features."""
    t, hq, d = q.size()
    hk = k.size(1)
    d = hl.specialize(d)
    half = hl.specialize(cos_sin_cache.size(1)) // 2
    pairs = d // 2
    cache3 = cos_sin_cache.view(-1, 2, half)  # [P, cos|sin, half]
    q4, k4 = q.view(t, hq, pairs, 2), k.view(t, hk, pairs, 2)
    out_q, out_k = torch.empty_like(q), torch.empty_like(k)
    oq4, ok4 = out_q.view(t, hq, pairs, 2), out_k.view(t, hk, pairs, 2)
    for tile_t in hl.tile(t):
        token_pos = positions[tile_t]
        for tile_p in hl.tile(half):
            cos = cache3[token_pos, 0, tile_p][:, None, :]  # [tile_t, 1, tile_p]
            sin = cache3[token_pos, 1, tile_p][:, None, :]
            q1 = q4[tile_t, :, tile_p, 0].to(torch.float32)
            q2 = q4[tile_t, :, tile_p, 1].to(torch.float32)
            oq4[tile_t, :, tile_p, 0] = (q1 * cos - q2 * sin).to(q.dtype)
            oq4[tile_t, :, tile_p, 1] = (q2 * cos + q1 * sin).to(q.dtype)
            k1 = k4[tile_t, :, tile_p, 0].to(torch.float32)
            k2 = k4[tile_t, :, tile_p, 1].to(torch.float32)
            ok4[tile_t, :, tile_p, 0] = (k1 * cos - k2 * sin).to(k.dtype)
            ok4[tile_t, :, tile_p, 1] = (k2 * cos + k1 * sin).to(k.dtype)
        for tile_p in hl.tile(half, pairs):  # pairs past rot_dim: copied
            oq4[tile_t, :, tile_p, :] = q4[tile_t, :, tile_p, :]
            ok4[tile_t, :, tile_p, :] = k4[tile_t, :, tile_p, :]
    return out_q, out_k


def check_shapes(head_size: int, rot_dim: int, is_neox: bool) -> None:
    """The host-side views need rot_dim even and (neox) half of it to divide the head size."""
    half = rot_dim // 2
    if rot_dim % 2 or rot_dim > head_size or (is_neox and head_size % half):
        layout = "neox: rot_dim/2 must divide head_size" if is_neox else "gpt-j"
        raise KilnError(
            f"rotary kernel needs an even rot_dim <= head_size ({layout}); got "
            f"rot_dim={rot_dim}, head_size={head_size}; use the reference implementation"
        )


@register_helion_impl(NAME, needs_cuda, "Helion, token per tile")
def rotary_embedding(
    run,
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    check_shapes(q.shape[-1], cos_sin_cache.shape[-1], is_neox)
    variant = "neox" if is_neox else "gptj"
    config = variant_config(runtime_config(NAME, q.device.type), variant)
    args = (positions, q.contiguous(), k.contiguous(), cos_sin_cache)
    return run(KERNELS[variant], config, *args)


def example_args(device: str, variant: str = "neox") -> tuple:
    """Llama-3-8B heads (32 q, 8 kv, head size 128), full rotary; an odd token count."""
    positions = torch.randint(0, 4096, (13,), device=device)
    q = torch.randn(13, 32, 128, dtype=torch.bfloat16, device=device)
    k = torch.randn(13, 8, 128, dtype=torch.bfloat16, device=device)
    return positions, q, k, torch.randn(4096, 128, device=device)


KERNELS = {"neox": rotary_neox_kernel, "gptj": rotary_gptj_kernel}


def cases() -> tuple[KernelCase, ...]:
    """Partial rotary (rot_dim 32) with an extra chunk (neox, head 80) or pairs (gpt-j)."""
    gen = torch.Generator().manual_seed(0)
    pos = torch.tensor([3, 0, 9, 1, 7, 2, 5])

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) + 0.1

    found = []
    for variant, head_size in (("neox", 80), ("gptj", 64)):
        launch = (pos, rand(7, 4, head_size), rand(7, 2, head_size), rand(12, 32))
        found.append(KernelCase(variant, variant, (*launch, variant == "neox"), launch))
    return tuple(found)


def plain_source(config: dict, args: tuple, variant: str):
    """Pinned configs hold one entry per variant: their loops (block ids) differ."""
    return helion_plain_source(KERNELS[variant], config, args)


register_kernel(
    KernelSpec(
        name=NAME,
        op=NAME,
        provider="helion",
        plain_source=plain_source,
        example_args=example_args,
        variants=("neox", "gptj"),
        cases=cases,
    )
)
