"""fp8 GEMM for a few tokens (decode) as plain Triton: the `triton` provider of `scaled_mm`.

At decode a linear layer multiplies M <= 16 or so rows by a weight of N x K fp8 values: the
time is the weight's bytes over memory bandwidth, and cuBLASLt's fp8 GEMM (tiles of 128 rows)
streams it no faster than bf16 does at M = 1. Here each program owns BLOCK_N output channels
of one range of K (split-K when N alone gives too few programs): it streams its
[BLOCK_N, BLOCK_K] weight tiles once, in order, and multiplies them on the tensor cores by the
transposed activation tile (`tl.dot(w, x.T)`, so the N side fills the MMA's 64-row side and
M is only padded to BLOCK_M), accumulating in fp32. Scales apply at the end: per token (or
per tensor) on the activation side, per output channel (or per tensor) on the weight side;
per-group activation scales apply per K block instead. With several splits each program
writes an fp32 partial and a second kernel sums them, adds the bias and casts.

Dispatch happens inside the implementation, by the token count M: up to the pinned config's
`max_m` the kernel runs, above it `torch._scaled_mm` (the `library` implementation). Eagerly
that is a Python `if`; traced with a dynamic token count (lowering), it is a `torch.cond` on
`M <= max_m` whose kernel branch calls `kiln_triton::scaled_mm_small_m`, a
`torch.library.triton_op` that AOTInductor decomposes into the kernel launches and compiles
into the package (export keeps the op whole). The predicate reads only the tensor's size, so a
CUDA graph captured for one token bucket replays that bucket's branch. `max_m: 0` in a config
turns the kernel off (the library runs for every M).
"""

from __future__ import annotations

import functools
import inspect
import math

import torch

import ir.kernels.scaled_mm as library_mm
from ir.host_triton import tl, triton
from ir.kernels.base import (
    CONFIG_TARGETS,
    KernelCase,
    KernelSpec,
    PlainSource,
    graph_launcher,
    load_config,
    needs_fp8,
    note_launch,
    register_kernel,
    register_triton_impl,
    runtime_config,
)
from ir.kernels.scaled_mm import fast_path_refusal, run_scaled_mm

OP = "scaled_mm"
NAME = "scaled_mm_small_m"
TRITON_OP = "kiln_triton::scaled_mm_small_m"
MIN_BLOCK_K = 32  # an fp8 MMA's K; per-group scales need groups that are multiples of it


@triton.jit
def _scaled_mm_small_m_kernel(
    x, x_scale, w, w_scale, bias, out, partial,
    M, N, K, k_per_split, x_group,
    stride_xm, stride_wn, stride_sm, stride_ws, stride_om,
    X_GROUPED: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # grid (N tiles, K splits, M tiles): acc[n, m] = sum over this split's K of w[n, k] x[m, k]
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_mask = n < N
    m_mask = m < M
    k_start = pid_s * k_per_split
    k_end = tl.minimum(K, k_start + k_per_split)
    kk = tl.arange(0, BLOCK_K)
    w_rows = w + n.to(tl.int64)[:, None] * stride_wn
    x_rows = x + m.to(tl.int64)[:, None] * stride_xm
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        k = k0 + kk
        k_mask = k < k_end
        wt = tl.load(w_rows + k[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0.0)
        xt = tl.load(x_rows + k[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
        if X_GROUPED:  # the block lies in one scale group (x_group is a multiple of BLOCK_K)
            xs = tl.load(x_scale + m * stride_sm + k0 // x_group, mask=m_mask, other=0.0)
            acc += tl.dot(wt, tl.trans(xt), max_num_imprecise_acc=0) * xs[None, :]
        else:
            # [BLOCK_N, BLOCK_M] fp32. max_num_imprecise_acc=0: Triton's sm_90 default lets
            # fp8 MMAs accumulate in the tensor core's reduced precision over all of K, which
            # moved 0.1% of the 8B shapes' outputs past bf16 tolerance on an H200.
            acc = tl.dot(wt, tl.trans(xt), acc, max_num_imprecise_acc=0)
    if not X_GROUPED:
        acc = acc * tl.load(x_scale + m * stride_sm, mask=m_mask, other=0.0)[None, :]
    acc = acc * tl.load(w_scale + n * stride_ws, mask=n_mask, other=0.0)[:, None]
    mask = n_mask[:, None] & m_mask[None, :]
    if SPLIT:
        rows = (pid_s * M + m).to(tl.int64)
        tl.store(partial + rows[None, :] * N + n[:, None], acc, mask=mask)
    else:
        if HAS_BIAS:
            acc += tl.load(bias + n, mask=n_mask, other=0.0).to(tl.float32)[:, None]
        dst = out + m.to(tl.int64)[None, :] * stride_om + n[:, None]
        tl.store(dst, acc.to(out.dtype.element_ty), mask=mask)


@triton.jit
def _split_k_reduce_kernel(
    partial, bias, out, M, N, splits, stride_om, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr
):
    # grid (M, N tiles): out[m, n] = sum over splits s of partial[s, m, n] (+ bias[n])
    m = tl.program_id(0)
    n = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = n < N
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in range(splits):
        acc += tl.load(partial + (s * M + m).to(tl.int64) * N + n, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias + n, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + m.to(tl.int64) * stride_om + n, acc.to(out.dtype.element_ty), mask=mask)


def _default_launcher(kernel, grid, *args, num_warps, num_stages, **kwargs):
    """Launch a @triton.jit kernel with Triton's own JIT."""
    return kernel[grid](*args, num_warps=num_warps, num_stages=num_stages, **kwargs)


def split_plan(n, k, x_groups, config):
    """(BLOCK_K, splits, K per split) for an [N, K] weight and `x_groups` activation scales per
    row: split K in powers of two until the grid has `programs` programs or a split would hold
    fewer than `min_k_blocks` blocks; per-group scales shrink BLOCK_K to divide the group."""
    block_k = config["BLOCK_K"]
    while x_groups > 1 and (k // x_groups) % block_k:
        block_k //= 2
    tiles, blocks = triton.cdiv(n, config["BLOCK_N"]), triton.cdiv(k, block_k)
    splits = 1
    while tiles * splits < config["programs"] and blocks // (2 * splits) >= config["min_k_blocks"]:
        splits *= 2
    k_per_split = triton.cdiv(blocks, splits) * block_k
    return block_k, triton.cdiv(k, k_per_split), k_per_split


def scaled_mm_small_m_launch(
    xq, x_scale, wq, w_scale, bias, out_dtype, *, config=None, _launcher=_default_launcher
):
    """Host side of `scaled_mm` on the kernel: xq [..., K] fp8, x_scale per tensor [1], per
    token [..., 1] or per group [T, G]; wq [N, K] fp8, w_scale [N] or [1]; `config` holds
    BLOCK_M/N/K, programs, min_k_blocks, num_warps, num_stages."""
    config = config or CONFIG
    lead, k, n = xq.shape[:-1], xq.shape[-1], wq.shape[0]
    a = xq.reshape(-1, k).contiguous()  # [M, K]
    w = wq if wq.stride(-1) == 1 else wq.contiguous()
    m = a.shape[0]
    x_groups = 1 if x_scale.dim() <= 1 else x_scale.shape[-1]
    xs = x_scale.float().reshape(-1, x_groups).contiguous()  # [M or 1, G]
    stride_sm = 0 if x_scale.dim() <= 1 else x_groups  # one scale for every row
    ws = w_scale.float().reshape(-1).contiguous()  # [N] or [1]
    stride_ws = 0 if ws.shape[0] == 1 else 1
    out = torch.empty((m, n), dtype=out_dtype, device=xq.device)  # [M, N]
    if m == 0:
        return out.reshape(*lead, n)
    block_k, splits, k_per_split = split_plan(n, k, x_groups, config)
    partial = out
    if splits > 1:
        partial = torch.empty((splits, m, n), dtype=torch.float32, device=xq.device)
    b = ws if bias is None else bias  # any pointer stands in for a missing bias
    block_m, block_n = config["BLOCK_M"], config["BLOCK_N"]
    _launcher(
        _scaled_mm_small_m_kernel, (triton.cdiv(n, block_n), splits, triton.cdiv(m, block_m)),
        a, xs, w, ws, b, out, partial, m, n, k, k_per_split, k // x_groups,
        a.stride(0), w.stride(0), stride_sm, stride_ws, out.stride(0),
        x_groups > 1, bias is not None, splits > 1, block_m, block_n, block_k,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )  # fmt: skip
    if splits > 1:
        _launcher(
            _split_k_reduce_kernel, (m, triton.cdiv(n, 1024)),
            partial, b, out, m, n, splits, out.stride(0), bias is not None, 1024,
            num_warps=4, num_stages=1,
        )  # fmt: skip
    return out.reshape(*lead, n)


CONFIG = load_config(NAME, CONFIG_TARGETS[0])  # a plain source pins its target's instead


def kernel_refusal(xq, x_scale, wq, w_scale) -> str | None:
    """Why the kernel cannot take these operands (None: it can); the library then runs."""
    if xq.dtype != torch.float8_e4m3fn or wq.dtype != torch.float8_e4m3fn:
        return f"operands are {xq.dtype}/{wq.dtype}, not float8_e4m3fn"
    k, n = xq.shape[-1], wq.shape[0]
    if x_scale.dim() <= 1 and x_scale.numel() != 1:
        return f"activation scale of shape {tuple(x_scale.shape)} is neither [1] nor per token"
    # per token or per group: one row of scales per token (the kernel strides over rows)
    if x_scale.dim() >= 2 and x_scale.shape[:-1] != xq.shape[:-1]:
        return f"activation scale rows {tuple(x_scale.shape[:-1])} are not one per token"
    if w_scale.numel() not in (1, n):
        return f"weight scale has {w_scale.numel()} values for {n} output channels"
    groups = 1 if x_scale.dim() <= 1 else x_scale.shape[-1]
    if groups > 1 and (xq.dim() != 2 or k % groups or (k // groups) % MIN_BLOCK_K):
        return f"per-group scales need 2-D input and groups of a multiple of {MIN_BLOCK_K}"
    return None


@functools.cache
def kernel_op():
    """The kernel as an op of its own, for `torch.cond`'s kernel branch (see the module
    docstring): AOTInductor traces its body, whose launches go through `wrap_triton`.
    Registered on first trace: `torch.library.triton_op` imports torch._inductor, which the
    serve path never loads."""

    @torch.library.triton_op(TRITON_OP, mutates_args=())
    def op(
        a: torch.Tensor,
        x_scale: torch.Tensor,
        wq: torch.Tensor,
        w_scale: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        config = runtime_config(NAME, a.device.type)
        args = (a, x_scale, wq, w_scale, bias, out_dtype)
        return scaled_mm_small_m_launch(*args, config=config, _launcher=graph_launcher)

    return op


def _traced_dispatch(a, x_scale, wq, w_scale, bias, out_dtype, max_m: int):
    """`M <= max_m ? kernel : library` as `torch.cond` over a symbolic token count M; its
    branches only compute (tracing them must not touch Python state), so the launches of
    both are noted here."""
    refusal = fast_path_refusal(a, x_scale, wq, w_scale, out_dtype)
    for name in kernel_names(wq, x_scale):
        note_launch(name)
    note_launch("aten._scaled_mm" if refusal is None else f"reference: {refusal}")
    operands = (a, x_scale, wq, w_scale) + (() if bias is None else (bias,))
    op = kernel_op()  # registered before cond traces its branches

    def kernel(a, x_scale, wq, w_scale, *bias):
        return op(a, x_scale, wq, w_scale, bias[0] if bias else None, out_dtype)

    def library(a, x_scale, wq, w_scale, *bias):
        b = bias[0] if bias else None
        return run_scaled_mm(a, x_scale, wq, w_scale, b, out_dtype, refusal)

    return torch.cond(a.shape[0] <= max_m, kernel, library, operands)


def kernel_names(wq, x_scale) -> list[str]:
    """The kernels a call launches for this weight (the reduction only with several splits)."""
    x_groups = 1 if x_scale.dim() <= 1 else x_scale.shape[-1]
    config = runtime_config(NAME, wq.device.type)
    splits = split_plan(wq.shape[0], wq.shape[1], x_groups, config)[1]
    kernels = (_scaled_mm_small_m_kernel, _split_k_reduce_kernel)[: 1 + (splits > 1)]
    return [k.fn.__name__ for k in kernels]


DESCRIPTION = "Triton split-K for few tokens, torch._scaled_mm above"


@register_triton_impl(OP, needs_fp8, DESCRIPTION, _default_launcher)
def scaled_mm(
    launcher,
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """The kernel for at most the config's `max_m` tokens, the library's GEMM above (eagerly by
    the token count; traced with a dynamic one, through `torch.cond`)."""
    library = library_mm.scaled_mm  # the `library` implementation: torch._scaled_mm
    config = runtime_config(NAME, xq.device.type)
    max_m = config["max_m"]
    if kernel_refusal(xq, x_scale, wq, w_scale) is not None or max_m == 0:
        return library(xq, x_scale, wq, w_scale, bias, out_dtype)
    lead, k, n = xq.shape[:-1], xq.shape[-1], wq.shape[0]
    tokens = math.prod(lead)
    if isinstance(tokens, torch.SymInt):
        out = _traced_dispatch(xq.reshape(-1, k), x_scale, wq, w_scale, bias, out_dtype, max_m)
        return out.reshape(*lead, n)
    if tokens > max_m:
        return library(xq, x_scale, wq, w_scale, bias, out_dtype)
    args = (xq, x_scale, wq, w_scale, bias, out_dtype)
    return scaled_mm_small_m_launch(*args, config=config, _launcher=launcher)


def plain_source(config: dict, args: tuple, variant: str) -> PlainSource:
    """Both kernels, the split plan and the host function as a standalone module."""
    parts = [
        "from __future__ import annotations\n\nimport torch\nimport triton\n"
        "import triton.language as tl\n",
        *(inspect.getsource(f.fn) for f in (_scaled_mm_small_m_kernel, _split_k_reduce_kernel)),
        inspect.getsource(_default_launcher),
        inspect.getsource(split_plan),
        inspect.getsource(scaled_mm_small_m_launch),
        f"CONFIG = {config!r}\n",
    ]
    return PlainSource(source="\n\n".join(parts), entry="scaled_mm_small_m_launch")


def operands(
    m: int, k: int, n: int, groups: int = 0, *, bias: bool = False, out_dtype=torch.bfloat16,
    device: str = "cpu", seed: int = 0,
) -> tuple:  # fmt: skip
    """Random `scaled_mm` arguments as the quantization pass makes them: xq [M, K] with
    per-token scales (or `groups` per row, or one per tensor with groups=-1), wq [N, K] with
    per-channel scales."""
    gen = torch.Generator().manual_seed(seed)
    fp8 = torch.float8_e4m3fn
    xq = (torch.randn(m, k, generator=gen) * 40).clamp(-448, 448).to(fp8)
    wq = (torch.randn(n, k, generator=gen) * 40).clamp(-448, 448).to(fp8)
    x_scale = torch.rand(1 if groups < 0 else m, max(groups, 1), generator=gen) * 1e-2 + 1e-3
    x_scale = x_scale.reshape(1) if groups < 0 else x_scale
    w_scale = torch.rand(n, generator=gen) * 1e-2 + 1e-3
    b = torch.randn(n, generator=gen).to(torch.bfloat16) if bias else None
    tensors = [t if t is None else t.to(device) for t in (xq, x_scale, wq, w_scale, b)]
    return (*tensors, out_dtype)


def example_args(device: str, variant: str = "per_token") -> tuple:
    """Llama-3-8B's o_proj (N = K = 4096, which splits K), 13 tokens; 128-wide groups."""
    return operands(13, 4096, 4096, 32 if variant == "per_group" else 0, device=device)


def cases() -> tuple[KernelCase, ...]:
    """Odd shapes: one token over K split in two (the last split partial), three tokens
    with a bias and K not a multiple of the block, 17 tokens (two M tiles) with 64-wide
    groups, per-tensor scales into fp32."""
    return (
        KernelCase("m1_split", "per_token", operands(1, 1100, 37)),
        KernelCase("m3_bias", "per_token", operands(3, 200, 45, bias=True, seed=1)),
        KernelCase("m17_group", "per_group", operands(17, 256, 33, 4, seed=2)),
        KernelCase("tensor_fp32", "per_token", operands(5, 96, 40, -1, out_dtype=torch.float32)),
    )


register_kernel(
    KernelSpec(
        name=NAME,
        op=OP,
        provider="triton",
        plain_source=plain_source,
        example_args=example_args,
        variants=("per_token", "per_group"),
        cases=cases,
    )
)
