"""Per-head RMSNorm of q and k, then rotary embedding, as one plain Triton kernel (Qwen3).

One program per (token, head) over the q heads then the k heads: it loads the head's row,
computes its inverse RMS in fp32, rounds the normed row like `rms_norm`'s reference (to the
input dtype, then times the weight in the output dtype), and rotates the first rot_dim
features. A feature's rotation partner (neox: the other half; gpt-j: the other of its pair)
is loaded a second time and normed with the same factor, so no register shuffle is needed.
"""

from __future__ import annotations

import inspect

import torch

from ir.host_triton import tl, triton
from ir.kernels.base import (
    KernelCase,
    KernelSpec,
    PlainSource,
    needs_cuda,
    register_kernel,
    register_triton_impl,
    runtime_config,
)
from kiln.errors import KilnError

NAME = "qk_norm_rope"


@triton.jit
def _qk_norm_rope_kernel(
    positions, q, k, q_weight, k_weight, cos_sin, q_out, k_out,
    num_q_heads, eps,
    q_stride_t, q_stride_h, k_stride_t, k_stride_h,
    qo_stride_t, qo_stride_h, ko_stride_t, ko_stride_h, cs_stride,
    head_size, rot_dim,
    IS_NEOX: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    # grid (T, Hq + Hk): head h < num_q_heads is q's head h, else k's head h - num_q_heads.
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    if h < num_q_heads:
        src = q + t * q_stride_t + h * q_stride_h
        dst = q_out + t * qo_stride_t + h * qo_stride_h
        weight = q_weight
    else:
        src = k + t * k_stride_t + (h - num_q_heads) * k_stride_h
        dst = k_out + t * ko_stride_t + (h - num_q_heads) * ko_stride_h
        weight = k_weight
    d = tl.arange(0, BLOCK_D)
    mask = d < head_size
    half = rot_dim // 2
    if IS_NEOX:
        partner = tl.where(d < half, d + half, d - half)
        sign = tl.where(d < half, -1.0, 1.0)
        freq = tl.where(d < half, d, d - half)
    else:
        partner = d ^ 1
        sign = tl.where(d % 2 == 0, -1.0, 1.0)
        freq = d // 2
    rot = mask & (d < rot_dim)
    x = tl.load(src + d, mask=mask, other=0.0).to(tl.float32)
    # eps may arrive as fp64 (AOTInductor passes Python floats so): round the sum to fp32 first
    inv_rms = tl.rsqrt((tl.sum(x * x, axis=0) / head_size + eps).to(tl.float32))
    xp = tl.load(src + partner, mask=rot, other=0.0).to(tl.float32)
    w = tl.load(weight + d, mask=mask, other=0.0).to(tl.float32)
    wp = tl.load(weight + partner, mask=rot, other=0.0).to(tl.float32)
    in_ty = q.dtype.element_ty
    out_ty = q_out.dtype.element_ty
    normed = (w * (x * inv_rms).to(in_ty).to(tl.float32)).to(out_ty).to(tl.float32)
    normed_p = (wp * (xp * inv_rms).to(in_ty).to(tl.float32)).to(out_ty).to(tl.float32)
    row = cos_sin + tl.load(positions + t).to(tl.int64) * cs_stride
    cos = tl.load(row + freq, mask=rot, other=1.0)
    sin = tl.load(row + half + freq, mask=rot, other=0.0)
    out = tl.where(rot, normed * cos + sign * normed_p * sin, normed)
    tl.store(dst + d, out.to(out_ty), mask=mask)


def _default_launcher(kernel, grid, *args, num_warps, num_stages, **kwargs):
    """Launch a @triton.jit kernel with Triton's own JIT."""
    return kernel[grid](*args, num_warps=num_warps, num_stages=num_stages, **kwargs)


def qk_norm_rope_launch(
    positions, q, k, q_weight, k_weight, eps, cos_sin_cache, is_neox,
    *, config=None, _launcher=_default_launcher,
):  # fmt: skip
    """Host side: outputs in the promoted dtype (as rms_norm's reference), one launch."""
    config = config or CONFIG
    num_tokens, num_q_heads, head_size = q.shape
    num_k_heads = k.shape[1]
    dtype = torch.promote_types(q.dtype, q_weight.dtype)
    q_out = torch.empty(q.shape, dtype=dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=dtype, device=k.device)
    _launcher(
        _qk_norm_rope_kernel, (num_tokens, num_q_heads + num_k_heads),
        positions, q, k, q_weight, k_weight, cos_sin_cache, q_out, k_out,
        num_q_heads, float(eps),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1),
        cos_sin_cache.stride(0), head_size, cos_sin_cache.shape[1],
        bool(is_neox), triton.next_power_of_2(head_size),
        num_warps=config["num_warps"], num_stages=1,
    )  # fmt: skip
    return q_out, k_out


CONFIG = {"num_warps": 4}  # overwritten by the pinned config


def check_shapes(q, k, cos_sin_cache) -> None:
    """The kernel addresses a head's features contiguously and rotates an even rot_dim."""
    rot_dim, head_size = cos_sin_cache.shape[-1], q.shape[-1]
    if rot_dim % 2 or rot_dim > head_size or k.shape[-1] != head_size:
        raise KilnError(
            f"qk_norm_rope kernel needs an even rot_dim <= head_size and equal q/k head sizes; "
            f"got rot_dim={rot_dim}, q head {head_size}, k head {k.shape[-1]}"
        )


@register_triton_impl(NAME, needs_cuda, "Triton, (token, head) per program", _default_launcher)
def qk_norm_rope(
    launcher,
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    eps: float,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head dims made contiguous, the device's pinned config, then the launch."""
    check_shapes(q, k, cos_sin_cache)
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    config = runtime_config(NAME, q.device.type)
    args = (positions, q, k, q_weight, k_weight, eps, cos_sin_cache.contiguous(), is_neox)
    return qk_norm_rope_launch(*args, config=config, _launcher=launcher)


def plain_source(config: dict, args: tuple, variant: str) -> PlainSource:
    """This file's kernel and host function as a standalone module, with `config` pinned."""
    parts = [
        "from __future__ import annotations\n\nimport torch\nimport triton\n"
        "import triton.language as tl\n",
        inspect.getsource(_qk_norm_rope_kernel.fn),
        inspect.getsource(_default_launcher),
        inspect.getsource(qk_norm_rope_launch),
        f"CONFIG = {config!r}\n",
    ]
    return PlainSource(source="\n\n".join(parts), entry="qk_norm_rope_launch")


def example_args(device: str, variant: str = "neox") -> tuple:
    """Qwen3-8B heads (32 q, 8 kv, head size 128), full rotary; an odd token count."""
    positions = torch.randint(0, 4096, (13,), device=device)
    q = torch.randn(13, 32, 128, dtype=torch.bfloat16, device=device)
    k = torch.randn(13, 8, 128, dtype=torch.bfloat16, device=device)
    q_weight = torch.randn(128, dtype=torch.bfloat16, device=device)
    k_weight = torch.randn(128, dtype=torch.bfloat16, device=device)
    cache = torch.randn(4096, 128, device=device)
    return positions, q, k, q_weight, k_weight, 1e-6, cache, variant == "neox"


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + 0.1


def _case_args(head_size: int, rot_dim: int, is_neox: bool) -> tuple:
    """7 tokens, 3 q heads and 2 k heads, fp32 (in bf16 one flipped rounding of a normed value
    shows through the rotation's cancellation; the gpu tests cover bf16)."""
    pos = torch.tensor([3, 0, 9, 1, 7, 2, 5])
    q, k = _rand(7, 3, head_size), _rand(7, 2, head_size, seed=1)
    weights = _rand(head_size, seed=2), _rand(head_size, seed=3)
    return pos, q, k, *weights, 1e-6, _rand(12, rot_dim, seed=4), is_neox


def cases() -> tuple[KernelCase, ...]:
    """Partial rotary in the neox layout at an odd head size; full rotary in the gptj layout."""
    return (
        KernelCase("neox", "neox", _case_args(80, 32, True)),
        KernelCase("gptj", "gptj", _case_args(64, 64, False)),
    )


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
