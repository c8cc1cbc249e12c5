"""Each fused IR op against independent math: the naive fp64 formulas of the ops it fuses
(never the IR compositions that define it), and all_reduce over a real two-rank gloo group."""

from __future__ import annotations

import os

import pytest
import torch
from op_cases import (
    dense_attention,
    make_paged_case,
    naive_rms_norm,
    naive_rotary,
    naive_silu_and_mul,
    rope_cache,
)

import ir.ops  # noqa: F401  (registers torch.ops.kiln.*)

ops = torch.ops.kiln
T = 6
FP8_MAX = 448.0  # e4m3's largest finite value
MIN_SCALE = 1e-12


def assert_quantizes(value: torch.Tensor, xq, scale, group_size: int, rel: float) -> None:
    """(xq, scale) is `value` [T, K] quantized to e4m3 with one scale per `group_size` features
    (per row for 0): scale = max(amax|group| / 448, 1e-12) and xq * scale within e4m3's rounding
    (2^-4 relative, half a subnormal step absolute) plus `rel` for the input dtype's rounding."""
    t, k = value.shape
    g = k if group_size == 0 else group_size
    groups = value.double().abs().unflatten(1, (k // g, g))  # [T, K // g, g]
    want_scale = (groups.amax(-1) / FP8_MAX).clamp(min=MIN_SCALE)
    assert xq.dtype == torch.float8_e4m3fn and xq.shape == (t, k)
    torch.testing.assert_close(scale.double(), want_scale, rtol=rel, atol=0)
    per_element = scale.double().repeat_interleave(g, dim=1)  # [T, K]
    err = (xq.double() * per_element - value.double()).abs()
    bound = (2**-4 + rel) * value.double().abs() + 2**-10 * per_element + rel * per_element
    assert (err <= bound).all(), float((err - bound).max())


@pytest.mark.parametrize("group_size", [0, 128])
@pytest.mark.parametrize("dtype, rel", [(torch.float32, 1e-5), (torch.bfloat16, 2**-7)])
def test_rms_norm_quant(group_size, dtype, rel):
    x, w = torch.randn(T, 256, dtype=dtype) * 3, torch.randn(256, dtype=dtype)
    x[2] = 0  # a zero row takes the scale floor
    xq, scale = ops.rms_norm_quant(x, w, 1e-6, group_size)
    assert_quantizes(naive_rms_norm(x, w, 1e-6), xq, scale, group_size, rel)
    assert (scale[2] == MIN_SCALE).all() and (xq[2].float() == 0).all()


@pytest.mark.parametrize("group_size", [0, 64])
def test_fused_add_rms_norm_quant(group_size):
    x, res, w = torch.randn(T, 256), torch.randn(T, 256), torch.randn(256)
    xq, scale, new_res = ops.fused_add_rms_norm_quant(x, res, w, 1e-5, group_size)
    total = x.double() + res.double()
    torch.testing.assert_close(new_res.double(), total)
    assert_quantizes(naive_rms_norm(total, w, 1e-5), xq, scale, group_size, 1e-5)


@pytest.mark.parametrize("group_size", [0, 64])
def test_silu_and_mul_quant(group_size):
    x = torch.randn(T, 512, dtype=torch.bfloat16) * 4
    xq, scale = ops.silu_and_mul_quant(x, group_size)
    assert_quantizes(naive_silu_and_mul(x), xq, scale, group_size, 2**-7)


@pytest.mark.parametrize("group_size", [0, 16])
@pytest.mark.parametrize("sliding_window", [0, 3])
def test_attention_quant(group_size, sliding_window):
    case = make_paged_case()
    args = case.args(scale=0.3, sliding_window=sliding_window)
    xq, scale = ops.attention_quant(*args, group_size)
    real = int(case.query_start_loc[-1])
    expected = dense_attention(case, 0.3, sliding_window).flatten(1)  # [T, Hq*D]
    assert_quantizes(expected[:real], xq[:real], scale[:real], group_size, 1e-5)
    # This step's K/V land in the cache at their slots (padding rows, slot -1, write nothing).
    slots = case.slot_mapping[:real]
    flat_k = args[3].view(-1, *case.k.shape[1:])
    flat_v = args[4].view(-1, *case.v.shape[1:])
    assert torch.equal(flat_k[slots], case.k[:real]) and torch.equal(flat_v[slots], case.v[:real])


def test_attention_quant_fake_matches_real_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    case = make_paged_case()
    real = ops.attention_quant(*case.args(0.3, 0), 16)
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = ops.attention_quant(*case.args(0.3, 0), 16)
    for r, f in zip(real, fake, strict=True):
        assert r.shape == f.shape and r.dtype == f.dtype


@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("rot_dim", [32, 16])
def test_qk_norm_rope(is_neox, rot_dim):
    positions = torch.randint(0, 100, (T,))
    q, k = torch.randn(T, 4, 32), torch.randn(T, 2, 32)
    qw, kw = torch.randn(32), torch.randn(32)
    q_out, k_out = ops.qk_norm_rope(
        positions, q, k, qw, kw, 1e-6, rope_cache(100, rot_dim), is_neox
    )
    want_q = naive_rotary(positions, naive_rms_norm(q, qw, 1e-6), rot_dim, is_neox)
    want_k = naive_rotary(positions, naive_rms_norm(k, kw, 1e-6), rot_dim, is_neox)
    torch.testing.assert_close(q_out.double(), want_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_out.double(), want_k, rtol=1e-5, atol=1e-5)


def _all_reduce_add_rms_norm_worker(rank: int, init_file: str, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    gen = torch.Generator().manual_seed(0)  # same res and w on both ranks
    x = torch.randn(T, 64, generator=gen) * (rank + 1)  # rank r holds x * (r + 1)
    res, w = torch.randn(T, 64, generator=gen), torch.randn(64, generator=gen)
    results[rank] = torch.ops.kiln.all_reduce_add_rms_norm(x, res, w, 1e-6, 2)
    dist.destroy_process_group()


@pytest.mark.slow  # spawns two Python processes that import torch
def test_all_reduce_add_rms_norm_over_two_gloo_ranks(tmp_path):
    """The sum over ranks is x * 3; both ranks get rms_norm(3x + res) and the new residual."""
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        init_file = os.path.join(tmp_path, "rendezvous")
        procs = [
            ctx.Process(target=_all_reduce_add_rms_norm_worker, args=(r, init_file, results))
            for r in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(T, 64, generator=gen)
        res, w = torch.randn(T, 64, generator=gen), torch.randn(64, generator=gen)
        total = 3 * x.double() + res.double()
        for rank in range(2):
            out, new_res = results[rank]
            torch.testing.assert_close(new_res.double(), total, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(
                out.double(), naive_rms_norm(total, w, 1e-6), rtol=1e-5, atol=1e-5
            )
