"""rope_attention as Triton: rotate q and k while writing K/V to the paged cache, then attend.

The unfused ops take three launches and a round trip of the rotated k through memory
(rotary_embedding writes q' and k'; attention's KV write reads k' back). Here one launch
rotates q into a scratch copy and writes the rotated k (and v) straight into the cache, and
attention's own kernel (`ir/kernels/attention.py`, reused unchanged) attends over it.
Rotation is fp32 and rounds like the references: q' and k' to q's/k's dtype first.
"""

from __future__ import annotations

import inspect

import torch

from ir.host_triton import tl, triton
from ir.kernels.attention import _attention_kernel, _default_launcher, check_layout
from ir.kernels.base import (
    KernelCase,
    KernelSpec,
    PlainSource,
    needs_cuda,
    register_kernel,
    register_triton_impl,
    runtime_config,
    variant_config,
)
from ir.ops.paged_inputs import paged_inputs

NAME = "rope_attention"


@triton.jit
def _rope_write_kernel(
    positions, q, k, v, q_out, k_cache, v_cache, slot_mapping, cos_sin,
    q_stride_t, q_stride_h, k_stride_t, k_stride_h, v_stride_t, v_stride_h,
    qo_stride_t, qo_stride_h,
    kc_stride_b, kc_stride_s, kc_stride_h, vc_stride_b, vc_stride_s, vc_stride_h,
    num_heads, block_size, head_size, rot_dim, cs_stride,
    IS_NEOX: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    # grid (T, Hq + Hk): head h < Hq rotates q[t, h] into q_out; the rest rotate k[t, h - Hq]
    # and write it and v[t, h - Hq] to token t's cache slot (slot < 0: padding, skip).
    t = tl.program_id(0)
    h = tl.program_id(1)
    d = tl.arange(0, BLOCK_D)
    mask = d < head_size
    half = rot_dim // 2
    rot = mask & (d < rot_dim)
    if IS_NEOX:  # pairs (i, i + half)
        first = d < half
        partner = tl.where(first, d + half, d - half)
        j = tl.where(first, d, d - half)
    else:  # pairs (2i, 2i + 1)
        first = d % 2 == 0
        partner = tl.where(first, d + 1, d - 1)
        j = d // 2
    sign = tl.where(first, -1.0, 1.0)
    pos = tl.load(positions + t).to(tl.int64)
    cos = tl.load(cos_sin + pos * cs_stride + j, mask=rot, other=1.0)
    sin = tl.load(cos_sin + pos * cs_stride + half + j, mask=rot, other=0.0)
    if h < num_heads:
        row = q + t.to(tl.int64) * q_stride_t + h * q_stride_h
        x = tl.load(row + d, mask=mask, other=0.0).to(tl.float32)
        xp = tl.load(row + partner, mask=rot, other=0.0).to(tl.float32)
        y = tl.where(rot, x * cos + sign * xp * sin, x)
        out_row = q_out + t.to(tl.int64) * qo_stride_t + h * qo_stride_h + d
        tl.store(out_row, y.to(q_out.dtype.element_ty), mask=mask)
    else:
        kh = h - num_heads
        slot = tl.load(slot_mapping + t).to(tl.int64)
        if slot >= 0:
            row = k + t.to(tl.int64) * k_stride_t + kh * k_stride_h
            x = tl.load(row + d, mask=mask, other=0.0).to(tl.float32)
            xp = tl.load(row + partner, mask=rot, other=0.0).to(tl.float32)
            y = tl.where(rot, x * cos + sign * xp * sin, x).to(k.dtype.element_ty)
            block = slot // block_size
            offset = slot % block_size
            kc_row = k_cache + block * kc_stride_b + offset * kc_stride_s + kh * kc_stride_h + d
            vc_row = v_cache + block * vc_stride_b + offset * vc_stride_s + kh * vc_stride_h + d
            vv = tl.load(v + t.to(tl.int64) * v_stride_t + kh * v_stride_h + d, mask=mask)
            tl.store(kc_row, y.to(k_cache.dtype.element_ty), mask=mask)
            tl.store(vc_row, vv.to(v_cache.dtype.element_ty), mask=mask)


def rope_attention_launch(
    positions, q, k, v, cos_sin_cache, is_neox, k_cache, v_cache, slot_mapping, block_tables,
    seq_lens, query_start_loc, scale, sliding_window, *, config=None, _launcher=_default_launcher,
):  # fmt: skip
    """Host side: rotate + write K/V, then attend; `config` holds BLOCK_N, num_warps, stages."""
    config = config or CONFIG
    num_tokens, num_heads, head_size = q.shape
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    block_d = triton.next_power_of_2(head_size)
    q_rot, out = torch.empty_like(q), torch.empty_like(q)
    if num_tokens == 0:
        return out
    _launcher(
        _rope_write_kernel, (num_tokens, num_heads + num_kv_heads),
        positions, q, k, v, q_rot, k_cache, v_cache, slot_mapping, cos_sin_cache,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        q_rot.stride(0), q_rot.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        num_heads, block_size, head_size, cos_sin_cache.shape[1], cos_sin_cache.stride(0),
        int(is_neox), block_d,
        num_warps=1, num_stages=1,
    )  # fmt: skip
    _launcher(
        _attention_kernel, (num_tokens, num_heads),
        q_rot, k_cache, v_cache, out, block_tables, seq_lens, query_start_loc,
        float(scale), int(sliding_window), seq_lens.shape[0], num_heads // num_kv_heads,
        block_size, head_size,
        q_rot.stride(0), q_rot.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        config["BLOCK_N"], block_d,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )  # fmt: skip
    return out


CONFIG = {"BLOCK_N": 32, "num_warps": 4, "num_stages": 1}  # overwritten by the pinned config


@register_triton_impl(NAME, needs_cuda, "Triton, rotary in the KV write", _default_launcher)
def rope_attention(
    launcher,
    positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    cos_sin_cache: torch.Tensor, is_neox: bool, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor, scale: float, sliding_window: int,
) -> torch.Tensor:  # fmt: skip
    """Contiguous inputs, the device's pinned config, then the launch (eager through Triton's
    JIT; in-graph, as lowering traces it into an artifact, through `wrap_triton`)."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    check_layout(q, k_cache)
    variant = "neox" if is_neox else "gptj"
    config = variant_config(runtime_config(NAME, q.device.type), variant)
    rest = (v_cache, slot_mapping, block_tables, seq_lens, query_start_loc, scale, sliding_window)
    args = (positions, q, k, v, cos_sin_cache.contiguous(), is_neox, k_cache, *rest)
    return rope_attention_launch(*args, config=config, _launcher=launcher)


def plain_source(config: dict, args: tuple, variant: str) -> PlainSource:
    """Both kernels and the host function as a standalone module, with `config` pinned."""
    parts = [
        "from __future__ import annotations\n\nimport torch\nimport triton\n"
        "import triton.language as tl\n",
        *(inspect.getsource(f.fn) for f in (_rope_write_kernel, _attention_kernel)),
        inspect.getsource(_default_launcher),
        inspect.getsource(rope_attention_launch),
        f"CONFIG = {config!r}\n",
    ]
    return PlainSource(source="\n\n".join(parts), entry="rope_attention_launch")


def _args(seqs, variant: str, rot_dim: int, dtype, device="cpu", **shape) -> tuple:
    """rope_attention's arguments around random paged-attention inputs."""
    q, k, v, *attention_args = paged_inputs(seqs, dtype=dtype, device=device, **shape)
    gen = torch.Generator().manual_seed(1)
    positions = torch.randint(0, 64, (q.shape[0],), generator=gen).to(device)
    cos_sin = torch.randn(64, rot_dim, generator=gen).to(device)
    return (positions, q, k, v, cos_sin, variant == "neox", *attention_args)


def example_args(device: str, variant: str = "neox") -> tuple:
    """Llama-3-8B heads (32 q, 8 kv, head size 128), full rotary, a mixed batch of 13."""
    shape = dict(num_heads=32, num_kv_heads=8, head_size=128, block_size=16)
    return _args([(5, 9), (1, 40), (7, 7)], variant, 128, torch.bfloat16, device, **shape)


def cases() -> tuple[KernelCase, ...]:
    """Small interpreter cases: partial rotary in both layouts, padding rows, a window."""
    shape = dict(num_heads=4, num_kv_heads=2, head_size=24, block_size=4)
    seqs = [(5, 9), (1, 17), (0, 3), (7, 7)]
    return (
        KernelCase("neox_bf16", "neox", _args(seqs, "neox", 16, torch.bfloat16,
                                              num_padding=2, **shape)),
        KernelCase("gptj_window", "gptj", _args(seqs, "gptj", 12, torch.float32,
                                                sliding_window=5, **shape)),
    )  # fmt: skip


register_kernel(
    KernelSpec(
        name=NAME,
        op=NAME,
        provider="triton",
        plain_source=plain_source,
        example_args=example_args,
        variants=("neox", "gptj"),
        cases=cases,
    )
)
