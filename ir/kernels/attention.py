"""Paged attention as plain Triton kernels: write this step's K/V, then attend causally.

Simple and correct rather than fast: one program per (query token, query head) walks the
sequence's KV blocks BLOCK_N tokens at a time with an online softmax in fp32. It serves mixed
prefill + decode batches, GQA, causal masking and an optional sliding window, like
`ir/ops/attention.py`. A program finds its sequence by binary search over query_start_loc,
so the launch needs no host-side preprocessing (and stays CUDA-graph friendly).
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

NAME = "attention"


@triton.jit
def _write_kv_kernel(
    k, v, k_cache, v_cache, slot_mapping,
    k_stride_t, k_stride_h, v_stride_t, v_stride_h,
    kc_stride_b, kc_stride_s, kc_stride_h, vc_stride_b, vc_stride_s, vc_stride_h,
    block_size, head_size,
    BLOCK_D: tl.constexpr,
):  # fmt: skip
    # grid (T, Hk): copy k/v[t, h, :] to the cache slot of token t (slot < 0: padding, skip).
    t = tl.program_id(0)
    h = tl.program_id(1)
    slot = tl.load(slot_mapping + t).to(tl.int64)
    if slot >= 0:
        block = slot // block_size
        offset = slot % block_size
        d = tl.arange(0, BLOCK_D)
        mask = d < head_size
        kv_row = k + t.to(tl.int64) * k_stride_t + h * k_stride_h + d
        vv_row = v + t.to(tl.int64) * v_stride_t + h * v_stride_h + d
        kc_row = k_cache + block * kc_stride_b + offset * kc_stride_s + h * kc_stride_h + d
        vc_row = v_cache + block * vc_stride_b + offset * vc_stride_s + h * vc_stride_h + d
        tl.store(kc_row, tl.load(kv_row, mask=mask).to(k_cache.dtype.element_ty), mask=mask)
        tl.store(vc_row, tl.load(vv_row, mask=mask).to(v_cache.dtype.element_ty), mask=mask)


@triton.jit
def _attention_kernel(
    q, k_cache, v_cache, out, block_tables, seq_lens, query_start_loc,
    scale, sliding_window, num_seqs, group_size, block_size, head_size,
    q_stride_t, q_stride_h, o_stride_t, o_stride_h, bt_stride,
    kc_stride_b, kc_stride_s, kc_stride_h, vc_stride_b, vc_stride_s, vc_stride_h,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    # grid (T, Hq): out[t, h, :] = softmax(q k^T * scale) v over the keys token t may see.
    t = tl.program_id(0)
    h = tl.program_id(1)
    d = tl.arange(0, BLOCK_D)
    d_mask = d < head_size
    # Binary search: the sequence is the largest i < num_seqs with query_start_loc[i] <= t
    # (the largest skips empty sequences). Inline: the CPU interpreter can't nest jit calls.
    seq = tl.zeros([], tl.int32)
    hi = seq + num_seqs - 1
    while seq < hi:
        mid = (seq + hi + 1) // 2
        if tl.load(query_start_loc + mid) <= t:
            seq = mid
        else:
            hi = mid - 1
    q_start = tl.load(query_start_loc + seq)
    q_len = tl.load(query_start_loc + seq + 1) - q_start
    seq_len = tl.load(seq_lens + seq)
    q_pos = seq_len - q_len + (t - q_start)  # this token's position; it sees keys <= q_pos
    # A padding token (past the last sequence) sees no key, so its row comes out zero.
    q_pos = tl.where(t >= tl.load(query_start_loc + num_seqs), -1, q_pos)
    kv_lo = tl.where(sliding_window > 0, tl.maximum(q_pos - sliding_window + 1, 0), 0)
    kv_head = h // group_size
    qv = tl.load(q + t.to(tl.int64) * q_stride_t + h * q_stride_h + d, mask=d_mask, other=0.0)
    qv = (qv.to(tl.float32) * scale).to(tl.float32)  # scale arrives as fp64 from AOTInductor
    m_i = tl.full([], float("-inf"), tl.float32)
    l_i = tl.zeros([], tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    table = block_tables + seq.to(tl.int64) * bt_stride
    for start in range(kv_lo, q_pos + 1, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)  # key positions
        n_mask = n <= q_pos
        block = tl.load(table + n // block_size, mask=n_mask, other=0).to(tl.int64)
        offset = n % block_size
        mask2 = n_mask[:, None] & d_mask[None, :]
        kc = block * kc_stride_b + offset * kc_stride_s + kv_head * kc_stride_h
        vc = block * vc_stride_b + offset * vc_stride_s + kv_head * vc_stride_h
        keys = tl.load(k_cache + kc[:, None] + d[None, :], mask=mask2, other=0.0)
        vals = tl.load(v_cache + vc[:, None] + d[None, :], mask=mask2, other=0.0)
        scores = tl.sum(keys.to(tl.float32) * qv[None, :], axis=1)  # [BLOCK_N]
        scores = tl.where(n_mask, scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=0))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * vals.to(tl.float32), axis=0)
        m_i = m_new
    out_row = out + t.to(tl.int64) * o_stride_t + h * o_stride_h + d
    l_safe = tl.where(l_i > 0, l_i, 1.0)  # l_i == 0 only for padding rows, whose acc is 0
    tl.store(out_row, (acc / l_safe).to(out.dtype.element_ty), mask=d_mask)


def _default_launcher(kernel, grid, *args, num_warps, num_stages, **kwargs):
    """Launch a @triton.jit kernel with Triton's own JIT."""
    return kernel[grid](*args, num_warps=num_warps, num_stages=num_stages, **kwargs)


def attention_launch(
    q, k, v, k_cache, v_cache, slot_mapping, block_tables, seq_lens, query_start_loc,
    scale, sliding_window, *, config=None, _launcher=_default_launcher,
):  # fmt: skip
    """Host side: write K/V, then attend; `config` holds BLOCK_N, num_warps, num_stages."""
    config = config or CONFIG
    num_tokens, num_heads, head_size = q.shape
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    block_d = triton.next_power_of_2(head_size)
    out = torch.empty_like(q)
    warps, stages = config["num_warps"], config["num_stages"]
    if num_tokens == 0:
        return out
    _launcher(
        _write_kv_kernel, (num_tokens, num_kv_heads),
        k, v, k_cache, v_cache, slot_mapping,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_size, head_size, block_d,
        num_warps=1, num_stages=1,
    )  # fmt: skip
    _launcher(
        _attention_kernel, (num_tokens, num_heads),
        q, k_cache, v_cache, out, block_tables, seq_lens, query_start_loc,
        float(scale), int(sliding_window), seq_lens.shape[0], num_heads // num_kv_heads,
        block_size, head_size,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        config["BLOCK_N"], block_d,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


CONFIG = {"BLOCK_N": 32, "num_warps": 4, "num_stages": 1}  # overwritten by the pinned config


def check_layout(q, k_cache) -> None:
    """Invariants the kernel's addressing relies on (contiguous head dims)."""
    assert q.stride(-1) == 1 and k_cache.stride(-1) == 1, "head dim must be contiguous"


@register_triton_impl(NAME, needs_cuda, "Triton, paged, online softmax", _default_launcher)
def attention(
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
) -> torch.Tensor:
    """Contiguous q/k/v, the device's pinned config, then the launch (eager through Triton's
    JIT; in-graph, as lowering traces it into an artifact, through `wrap_triton`)."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    check_layout(q, k_cache)
    config = runtime_config(NAME, q.device.type)
    rest = (v_cache, slot_mapping, block_tables, seq_lens, query_start_loc, scale, sliding_window)
    return attention_launch(q, k, v, k_cache, *rest, config=config, _launcher=launcher)


def plain_source(config: dict, args: tuple, variant: str) -> PlainSource:
    """This file's kernels and host function as a standalone module, with `config` pinned."""
    parts = [
        "from __future__ import annotations\n\nimport torch\nimport triton\n"
        "import triton.language as tl\n",
        *(inspect.getsource(f.fn) for f in (_write_kv_kernel, _attention_kernel)),
        inspect.getsource(_default_launcher),
        inspect.getsource(attention_launch),
        f"CONFIG = {config!r}\n",
    ]
    return PlainSource(source="\n\n".join(parts), entry="attention_launch")


def example_args(device: str, variant: str = "default") -> tuple:
    """Llama-3-8B heads (32 q, 8 kv, head size 128), 16-token blocks, a mixed batch of 13."""
    from ir.ops.paged_inputs import paged_inputs

    return paged_inputs(
        [(5, 9), (1, 40), (7, 7)], num_heads=32, num_kv_heads=8, head_size=128,
        block_size=16, dtype=torch.bfloat16, device=device,
    )  # fmt: skip


def cases() -> tuple[KernelCase, ...]:
    """A mixed batch (prefill with history, decode, an empty query, a fresh prefill) in bf16
    with 2 padding rows, and in fp32 with a sliding window."""
    from ir.ops.paged_inputs import paged_inputs

    shape = dict(num_heads=4, num_kv_heads=2, head_size=24, block_size=4)
    seqs = [(5, 9), (1, 17), (0, 3), (7, 7)]
    bf16 = paged_inputs(seqs, **shape, dtype=torch.bfloat16, num_padding=2)
    window = paged_inputs(seqs, **shape, dtype=torch.float32, sliding_window=5)
    return (KernelCase("bf16", "default", bf16), KernelCase("window", "default", window))


register_kernel(
    KernelSpec(
        name=NAME,
        op=NAME,
        provider="triton",
        plain_source=plain_source,
        example_args=example_args,
        cases=cases,
    )
)
