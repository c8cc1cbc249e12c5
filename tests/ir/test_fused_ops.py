"""Each fused IR op equals, bit for bit, the composition of the unfused ops it replaces."""

from __future__ import annotations

import pytest
import torch
from op_cases import make_paged_case, rope_cache

import ir.ops  # noqa: F401  (registers torch.ops.kiln.*)

ops = torch.ops.kiln
T = 6


def assert_same(actual, expected):
    """Bitwise equality of tensors (fp8 has no CPU equality kernel, so compare bytes)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if actual.dtype == torch.float8_e4m3fn:
        actual, expected = actual.view(torch.uint8), expected.view(torch.uint8)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("group_size", [0, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_quant_is_quant_of_rms_norm(group_size, dtype):
    x, w = torch.randn(T, 256, dtype=dtype) * 3, torch.randn(256, dtype=dtype)
    xq, scale = ops.rms_norm_quant(x, w, 1e-6, group_size)
    ref_q, ref_scale = ops.quant_fp8(ops.rms_norm(x, w, 1e-6), group_size)
    assert_same(xq, ref_q)
    assert_same(scale, ref_scale)


@pytest.mark.parametrize("group_size", [0, 64])
def test_fused_add_rms_norm_quant_is_quant_of_fused_add_rms_norm(group_size):
    x, res, w = torch.randn(T, 256), torch.randn(T, 256), torch.randn(256)
    xq, scale, new_res = ops.fused_add_rms_norm_quant(x, res, w, 1e-5, group_size)
    out, ref_res = ops.fused_add_rms_norm(x, res, w, 1e-5)
    ref_q, ref_scale = ops.quant_fp8(out, group_size)
    assert_same(xq, ref_q)
    assert_same(scale, ref_scale)
    assert_same(new_res, ref_res)


@pytest.mark.parametrize("group_size", [0, 64])
def test_silu_and_mul_quant_is_quant_of_silu_and_mul(group_size):
    x = torch.randn(T, 512, dtype=torch.bfloat16) * 4
    xq, scale = ops.silu_and_mul_quant(x, group_size)
    ref_q, ref_scale = ops.quant_fp8(ops.silu_and_mul(x), group_size)
    assert xq.shape == (T, 256)
    assert_same(xq, ref_q)
    assert_same(scale, ref_scale)


@pytest.mark.parametrize("group_size", [0, 16])
@pytest.mark.parametrize("sliding_window", [0, 3])
def test_attention_quant_is_quant_of_flattened_attention(group_size, sliding_window):
    case = make_paged_case()
    fused_args = case.args(scale=0.3, sliding_window=sliding_window)
    plain_args = case.args(scale=0.3, sliding_window=sliding_window)
    xq, scale = ops.attention_quant(*fused_args, group_size)
    out = ops.attention(*plain_args)
    ref_q, ref_scale = ops.quant_fp8(out.flatten(1), group_size)
    assert xq.shape == (case.q.shape[0], case.q.shape[1] * case.q.shape[2])
    assert_same(xq, ref_q)
    assert_same(scale, ref_scale)
    # Both write this step's K/V into the cache identically.
    assert_same(fused_args[3], plain_args[3])
    assert_same(fused_args[4], plain_args[4])
    assert not torch.equal(fused_args[3], case.k_cache)


def test_attention_quant_fake_matches_real_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    case = make_paged_case()
    real = ops.attention_quant(*case.args(0.3, 0), 16)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = ops.attention_quant(*case.args(0.3, 0), 16)
    for r, f in zip(real, fake, strict=True):
        assert r.shape == f.shape and r.dtype == f.dtype


def test_all_reduce_add_rms_norm_is_fused_add_rms_norm_of_all_reduce():
    x, res, w = torch.randn(T, 64), torch.randn(T, 64), torch.randn(64)
    out, new_res = ops.all_reduce_add_rms_norm(x, res, w, 1e-6, 2)
    ref_out, ref_res = ops.fused_add_rms_norm(ops.all_reduce(x, 2), res, w, 1e-6)
    assert_same(out, ref_out)
    assert_same(new_res, ref_res)


@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("rot_dim", [32, 16])
def test_qk_norm_rope_is_rope_of_per_head_rms_norm(is_neox, rot_dim):
    positions = torch.randint(0, 100, (T,))
    q = torch.randn(T, 4, 32, dtype=torch.bfloat16)
    k = torch.randn(T, 2, 32, dtype=torch.bfloat16)
    qw, kw = torch.randn(32, dtype=torch.bfloat16), torch.randn(32, dtype=torch.bfloat16)
    cache = rope_cache(100, rot_dim)
    q_out, k_out = ops.qk_norm_rope(positions, q, k, qw, kw, 1e-6, cache, is_neox)
    ref_q, ref_k = ops.rotary_embedding(
        positions, ops.rms_norm(q, qw, 1e-6), ops.rms_norm(k, kw, 1e-6), cache, is_neox
    )
    assert_same(q_out, ref_q)
    assert_same(k_out, ref_k)
