"""Fused IR ops that fusion passes create.

Each reference is the composition of the unfused ops' references it replaces, so a pass that
swaps the pattern for the fused op cannot change results; faster implementations are tested
against these. Each op also gives `unfused`: the graph a fusion pass rewrites into it, written
with the unfused ops themselves (tests/ir/test_fused_ops.py runs the passes on that graph).
"""

import torch

from ir.ops.activation import silu_and_mul
from ir.ops.collective import all_reduce
from ir.ops.examples import paged_attention_args, rope_args, rope_cache
from ir.ops.norm import fused_add_rms_norm, rms_norm
from ir.ops.quant import FP8_DTYPE, check_group_size, quant_fp8
from ir.ops.rotary import rotary_embedding
from ir.registry import ir_op

kiln = torch.ops.kiln


@ir_op(
    "rms_norm_quant",
    example=lambda: (torch.randn(5, 256), torch.randn(256), 1e-6, 0),
    unfused=lambda x, weight, eps, group_size: kiln.quant_fp8(
        kiln.rms_norm(x, weight, eps), group_size
    ),
)
def rms_norm_quant(
    x: torch.Tensor, weight: torch.Tensor, eps: float, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """quant_fp8(rms_norm(x, weight, eps), group_size) -> (xq, scale)."""
    return quant_fp8.reference(rms_norm.reference(x, weight, eps), group_size)


def _fused_add_rms_norm_then_quant(x, residual, weight, eps, group_size):
    out, new_residual = kiln.fused_add_rms_norm(x, residual, weight, eps)
    xq, scale = kiln.quant_fp8(out, group_size)
    return xq, scale, new_residual


@ir_op(
    "fused_add_rms_norm_quant",
    example=lambda: (torch.randn(5, 256), torch.randn(5, 256), torch.randn(256), 1e-6, 128),
    unfused=_fused_add_rms_norm_then_quant,
)
def fused_add_rms_norm_quant(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fused_add_rms_norm then quant_fp8 of the normed output -> (xq, scale, new_residual)."""
    out, new_residual = fused_add_rms_norm.reference(x, residual, weight, eps)
    xq, scale = quant_fp8.reference(out, group_size)
    return xq, scale, new_residual


@ir_op(
    "silu_and_mul_quant",
    example=lambda: (torch.randn(5, 256), 64),
    unfused=lambda x, group_size: kiln.quant_fp8(kiln.silu_and_mul(x), group_size),
)
def silu_and_mul_quant(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """quant_fp8(silu_and_mul(x), group_size) -> (xq, scale)."""
    return quant_fp8.reference(silu_and_mul.reference(x), group_size)


def _fake_attention_quant(
    q,
    k,
    v,
    k_cache,
    v_cache,
    slot_mapping,
    block_tables,
    seq_lens,
    query_start_loc,
    scale,
    sliding_window,
    group_size,
):
    num_tokens, width = q.shape[0], q.shape[1] * q.shape[2]
    check_group_size(width, group_size)
    num_scales = 1 if group_size == 0 else width // group_size
    xq = q.new_empty((num_tokens, width), dtype=FP8_DTYPE)
    x_scale = q.new_empty((num_tokens, num_scales), dtype=torch.float32)
    return xq, x_scale


def _attention_then_quant(*args):
    *attention_args, group_size = args
    return kiln.quant_fp8(kiln.attention(*attention_args).flatten(1), group_size)


@ir_op(
    "attention_quant",
    mutates_args=("k_cache", "v_cache"),
    fake=_fake_attention_quant,
    example=lambda: (*paged_attention_args(), 16),
    unfused=_attention_then_quant,
)
def attention_quant(
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
    """quant_fp8(attention(...).flatten(1), group_size) -> (xq [T, Hq*D], scale); writes KV.

    The attention step goes through the `attention` op, so where no fused kernel exists this
    composition still runs the attention kernel chosen for the device (on a GPU a Triton kernel
    that CUDA graphs can capture; attention's own reference reads sizes on the host)."""
    return attention_then_quant(
        torch.ops.kiln.attention,
        q, k, v, k_cache, v_cache, slot_mapping, block_tables, seq_lens, query_start_loc,
        scale, sliding_window, group_size,
    )  # fmt: skip


def attention_then_quant(attention, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """attention_quant's composition with `attention` as the attention step (the op, or a
    kernel's in-graph form when lowering traces it): args are attention_quant's."""
    *attention_args, group_size = args
    out = attention(*attention_args)  # [T, Hq, D]
    return quant_fp8.reference(out.flatten(1), group_size)


@ir_op(
    "all_reduce_add_rms_norm",
    opaque=True,
    example=lambda: (torch.randn(5, 32), torch.randn(5, 32), torch.randn(32), 1e-6, 2),
    unfused=lambda x, residual, weight, eps, group_size: kiln.fused_add_rms_norm(
        kiln.all_reduce(x, group_size), residual, weight, eps
    ),
)
def all_reduce_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """fused_add_rms_norm(all_reduce(x, group_size), residual, weight, eps) -> (out, residual')."""
    return fused_add_rms_norm.reference(all_reduce.reference(x, group_size), residual, weight, eps)


def _qk_norm_then_rope(positions, q, k, q_weight, k_weight, eps, cos_sin_cache, is_neox):
    q, k = kiln.rms_norm(q, q_weight, eps), kiln.rms_norm(k, k_weight, eps)
    return kiln.rotary_embedding(positions, q, k, cos_sin_cache, is_neox)


def _qk_norm_rope_example() -> tuple:
    positions, q, k, cache, _ = rope_args(rot_dim=16)
    return positions, q, k, torch.randn(16), torch.randn(16), 1e-6, cache, False


@ir_op("qk_norm_rope", example=_qk_norm_rope_example, unfused=_qk_norm_then_rope)
def qk_norm_rope(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    eps: float,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head RMSNorm of q [T, Hq, D] and k [T, Hk, D], then rotary_embedding -> (q, k)."""
    return rotary_embedding.reference(
        positions,
        rms_norm.reference(q, q_weight, eps),
        rms_norm.reference(k, k_weight, eps),
        cos_sin_cache,
        is_neox,
    )


def _fake_rope_attention(positions, q, *rest):
    return torch.empty_like(q)


def _rope_then_attention(positions, q, k, v, cos_sin_cache, is_neox, *attention_args):
    q, k = kiln.rotary_embedding(positions, q, k, cos_sin_cache, is_neox)
    return kiln.attention(q, k, v, *attention_args)


def _rope_attention_example() -> tuple:
    q, k, v, *attention_args = paged_attention_args()
    positions = torch.randint(0, 64, (q.shape[0],))
    cache = rope_cache(64, q.shape[-1] // 2)  # partial rotary, gpt-j pairs
    return (positions, q, k, v, cache, False, *attention_args)


@ir_op(
    "rope_attention",
    mutates_args=("k_cache", "v_cache"),
    fake=_fake_rope_attention,
    example=_rope_attention_example,
    unfused=_rope_then_attention,
)
def rope_attention(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    scale: float,
    sliding_window: int,
) -> torch.Tensor:
    """attention(rotary_embedding(positions, q, k, ...), v, ...) -> [T, Hq, D]; writes the
    rotated K and V into the cache. The attention step goes through the `attention` op, so
    it runs the attention kernel bound for the device where no fused kernel is chosen."""
    q, k = rotary_embedding.reference(positions, q, k, cos_sin_cache, is_neox)
    return torch.ops.kiln.attention(
        q, k, v, k_cache, v_cache, slot_mapping, block_tables, seq_lens, query_start_loc,
        scale, sliding_window,
    )  # fmt: skip
