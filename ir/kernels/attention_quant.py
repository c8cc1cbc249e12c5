"""Attention writing fp8 output + scales: the Triton paged attention, then a Triton row
quantizer over its [T, Hq * D] output, in one host function (two launches, no host sync).

Everything it launches is a plain Triton kernel, so CUDA graphs capture it and lowering traces
it into the artifact (the reference composition reads sizes on the host and cannot be
captured). The quantizer matches `quant_fp8`'s reference: scale = max(amax|x| / 448, 1e-12),
xq = clamp(x / scale, -448, 448) in e4m3 (FP8 constants are literals: see quant_fp8.py).
"""

from __future__ import annotations

import inspect

import torch

from ir.host_triton import tl, triton
from ir.kernels import attention as attention_kernel
from ir.kernels.base import (
    KernelCase,
    KernelSpec,
    PlainSource,
    needs_fp8,
    register_kernel,
    register_triton_impl,
    runtime_config,
)

NAME = "attention_quant"


@triton.jit
def _quant_rows_kernel(
    x, xq, scale, x_stride_t, xq_stride_t, s_stride_t, group, BLOCK_G: tl.constexpr
):  # fmt: skip
    # grid (T, groups): quantize features [g * group, (g + 1) * group) of row t.
    t = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1)
    c = tl.arange(0, BLOCK_G)
    mask = c < group
    v = tl.load(x + t * x_stride_t + g * group + c, mask=mask, other=0.0).to(tl.float32)
    s = tl.maximum(tl.max(tl.abs(v), axis=0) / 448.0, 1e-12)
    clipped = tl.minimum(tl.maximum(v / s, -448.0), 448.0)
    tl.store(xq + t * xq_stride_t + g * group + c, clipped.to(xq.dtype.element_ty), mask=mask)
    tl.store(scale + t * s_stride_t + g, s)


# The attention module's host pieces, shared so the plain source below is one module.
_default_launcher = attention_kernel._default_launcher
attention_launch = attention_kernel.attention_launch


def attention_quant_launch(
    q, k, v, k_cache, v_cache, slot_mapping, block_tables, seq_lens, query_start_loc,
    scale, sliding_window, group_size, *, config=None, _launcher=_default_launcher,
):  # fmt: skip
    """Host side: attention (writes K/V), then per-token or per-group fp8 of its output."""
    out = attention_launch(
        q, k, v, k_cache, v_cache, slot_mapping, block_tables, seq_lens, query_start_loc,
        scale, sliding_window, config=config, _launcher=_launcher,
    )  # fmt: skip
    num_tokens, width = out.shape[0], out.shape[1] * out.shape[2]
    group = width if group_size == 0 else group_size
    flat = out.view(num_tokens, width)  # [T, Hq * D]
    xq = torch.empty((num_tokens, width), dtype=torch.float8_e4m3fn, device=q.device)
    x_scale = torch.empty((num_tokens, width // group), dtype=torch.float32, device=q.device)
    _launcher(
        _quant_rows_kernel, (num_tokens, width // group),
        flat, xq, x_scale, flat.stride(0), xq.stride(0), x_scale.stride(0),
        group, triton.next_power_of_2(group),
        num_warps=4, num_stages=1,
    )  # fmt: skip
    return xq, x_scale


def _check_group(width: int, group_size: int) -> None:
    if group_size < 0 or (group_size > 0 and width % group_size):
        raise ValueError(
            f"group_size={group_size} must be 0 (per token) or a positive divisor of the "
            f"attention output width {width}"
        )


@register_triton_impl(
    NAME, needs_fp8, "Triton attention + Triton row quantizer, no host sync", _default_launcher
)
def attention_quant(
    launcher,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    sliding_window: int,
    group_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention's checks and tiling, then attention and the quantizer (two launches)."""
    _check_group(q.shape[1] * q.shape[2], group_size)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    attention_kernel.check_layout(q, k_cache)
    config = runtime_config(NAME, q.device.type)  # attention's tiling
    rest = (v_cache, slot_mapping, block_tables, seq_lens, query_start_loc, scale, sliding_window)
    args = (q, k, v, k_cache, *rest, group_size)
    return attention_quant_launch(*args, config=config, _launcher=launcher)


def plain_source(config: dict, args: tuple, variant: str) -> PlainSource:
    """Attention's kernels and host function plus the quantizer, as one standalone module."""
    attention = attention_kernel.plain_source(config, args, variant).source
    parts = [
        attention,
        inspect.getsource(_quant_rows_kernel.fn),
        inspect.getsource(attention_quant_launch),
    ]
    return PlainSource(source="\n\n".join(parts), entry="attention_quant_launch")


def example_args(device: str, variant: str = "per_token") -> tuple:
    """Llama-3-8B heads, a mixed batch of 13 tokens; per-token or 128-wide groups."""
    return (*attention_kernel.example_args(device), 0 if variant == "per_token" else 128)


def cases() -> tuple[KernelCase, ...]:
    """A mixed batch (prefill with history, decode, an empty query, a fresh prefill): bf16
    with 2 padding rows and per-token scales; fp32 with 24-wide groups."""
    from ir.ops.paged_inputs import paged_inputs

    shape = dict(num_heads=4, num_kv_heads=2, head_size=24, block_size=4)
    seqs = [(5, 9), (1, 17), (0, 3), (7, 7)]
    bf16 = paged_inputs(seqs, **shape, dtype=torch.bfloat16, num_padding=2)
    fp32 = paged_inputs(seqs, **shape, dtype=torch.float32)
    return (
        KernelCase("per_token", "per_token", (*bf16, 0)),
        KernelCase("group", "group128", (*fp32, 24)),
    )


register_kernel(
    KernelSpec(
        name=NAME,
        op=NAME,
        provider="triton",
        plain_source=plain_source,
        example_args=example_args,
        variants=("per_token", "group128"),
        cases=cases,
    )
)
