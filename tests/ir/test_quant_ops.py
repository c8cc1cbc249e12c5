"""quant_fp8 / scaled_mm against naive per-element math and error bounds."""

from __future__ import annotations

import pytest
import torch

from ir.ops.quant import FP8_MAX, dequant_fp8, quantize_weight_per_channel

# e4m3 has 3 mantissa bits: round-to-nearest is within 2^-4 relative for normal values, and
# within half the subnormal step (2^-9 / 2) times the scale below 2^-6.
REL_BOUND = 2**-4
SUBNORMAL_HALF_STEP = 2**-10


def assert_round_trip_within_fp8_bounds(x, xq, scale):
    deq = dequant_fp8(xq, scale)
    err = (deq - x.float()).abs()
    bound = REL_BOUND * x.float().abs() + SUBNORMAL_HALF_STEP * torch.broadcast_to(
        _per_element(scale, x.shape[-1]), x.shape
    )
    assert (err <= bound * (1 + 1e-5)).all()
    big = x.float().abs() > 0.05 * x.float().abs().amax()
    assert ((err / x.float().abs())[big] < 0.07).all()


def _per_element(scale, k):
    if scale.dim() == 2 and scale.shape[1] > 1:
        return torch.cat([s.expand(-1, k // scale.shape[1]) for s in scale.split(1, dim=1)], 1)
    return scale


@pytest.mark.parametrize("group_size", [0, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quant_fp8_scales_are_group_amax_over_fp8_max(group_size, dtype):
    x = (torch.randn(6, 256) * torch.rand(6, 1) * 20).to(dtype)
    xq, scale = torch.ops.kiln.quant_fp8(x, group_size)
    g = 256 if group_size == 0 else group_size
    assert xq.dtype == torch.float8_e4m3fn and xq.shape == x.shape
    assert scale.dtype == torch.float32 and scale.shape == (6, 256 // g)
    for j in range(256 // g):
        amax = x[:, j * g : (j + 1) * g].float().abs().amax(dim=1)
        torch.testing.assert_close(scale[:, j], amax / FP8_MAX)
    # The largest element of each group lands on +-FP8_MAX exactly.
    assert (xq.float().abs().unflatten(1, (256 // g, g)).amax(-1) == FP8_MAX).all()
    assert_round_trip_within_fp8_bounds(x, xq, scale)


def test_quant_fp8_zero_rows_quantize_to_zero():
    x = torch.randn(4, 128)
    x[1] = 0
    x[3, :64] = 0
    for group_size in (0, 64):
        xq, scale = torch.ops.kiln.quant_fp8(x, group_size)
        assert torch.isfinite(scale).all() and (scale > 0).all()
        assert (xq[1].float() == 0).all() and (xq[3, :64].float() == 0).all()
        assert (dequant_fp8(xq, scale)[1] == 0).all()


@pytest.mark.parametrize("group_size", [-1, 48])
def test_quant_fp8_rejects_group_size_not_dividing_k(group_size):
    with pytest.raises(ValueError, match="group_size"):
        torch.ops.kiln.quant_fp8(torch.randn(2, 128), group_size)


def test_quantize_weight_per_channel():
    w = torch.randn(16, 96) * torch.rand(16, 1) * 3
    wq, w_scale = quantize_weight_per_channel(w)
    assert wq.shape == w.shape and w_scale.shape == (16,)
    torch.testing.assert_close(w_scale, w.abs().amax(1) / FP8_MAX)
    assert_round_trip_within_fp8_bounds(w, wq, w_scale[:, None])


def naive_scaled_mm(xq, x_scale, wq, w_scale, bias):
    """out[t, n] = sum_k xq[t,k] * s_x(t, group(k)) * wq[n,k] * s_w(n), in fp64 by loops over groups."""
    k = xq.shape[1]
    groups = x_scale.shape[-1] if x_scale.dim() == 2 else 1
    g = k // groups
    out = torch.zeros(xq.shape[0], wq.shape[0], dtype=torch.float64)
    for j in range(groups):
        xs = x_scale[:, j : j + 1] if x_scale.dim() == 2 else x_scale
        xj = xq[:, j * g : (j + 1) * g].double() * xs.double()
        out += xj @ wq[:, j * g : (j + 1) * g].double().t()
    out = out * w_scale.double().reshape(1, -1)
    return out if bias is None else out + bias.double()


@pytest.mark.parametrize("group_size", [0, 32, "static"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_scaled_mm_matches_naive_and_approximates_fp32_matmul(group_size, with_bias):
    x, w = torch.randn(7, 128) * 2, torch.randn(24, 128) * 0.1
    bias = torch.randn(24) if with_bias else None
    if group_size == "static":
        x_scale = (x.abs().amax() / FP8_MAX).reshape(1)
        xq = (x / x_scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)  # a calibrated scale
    else:
        xq, x_scale = torch.ops.kiln.quant_fp8(x, group_size)
    wq, w_scale = quantize_weight_per_channel(w)
    out = torch.ops.kiln.scaled_mm(xq, x_scale, wq, w_scale, bias, torch.float32)
    expected = naive_scaled_mm(xq, x_scale, wq, w_scale, bias)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    exact = x @ w.t() + (0 if bias is None else bias)
    cos = torch.nn.functional.cosine_similarity(out.flatten(), exact.flatten(), dim=0)
    assert cos > 0.99


def test_scaled_mm_casts_to_out_dtype():
    xq, x_scale = torch.ops.kiln.quant_fp8(torch.randn(3, 64), 0)
    wq, w_scale = quantize_weight_per_channel(torch.randn(5, 64))
    out = torch.ops.kiln.scaled_mm(xq, x_scale, wq, w_scale, None, torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.shape == (3, 5)
    full = torch.ops.kiln.scaled_mm(xq, x_scale, wq, w_scale, None, torch.float32)
    assert torch.equal(out, full.to(torch.bfloat16))
