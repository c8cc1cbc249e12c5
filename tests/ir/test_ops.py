"""Every IR op passes torch.library.opcheck; the starter ops' references match naive math."""

from __future__ import annotations

import os

import pytest
import torch
from op_cases import dense_attention, make_paged_case, naive_rotary, rope_cache

import ir.ops  # noqa: F401  (registers torch.ops.kiln.*)
from ir.registry import all_ops, get_op

T, HQ, HK, D = 5, 4, 2, 16


def _example(name: str) -> tuple:
    """The op's own example arguments (`ir_op(..., example=...)`), checked to exist."""
    op = get_op(name)
    assert op.example is not None, (
        f"kiln.{name} has no example inputs: pass example=lambda: (...small random args...) "
        f"to @ir_op in {op.reference.__module__.replace('.', '/')}.py"
    )
    return op.example()


OPS = [op.name for op in all_ops()]  # every registered op: opcheck cannot skip one


# torch's SchemaCheckMode compares fp8 *inputs* with allclose, which has no CPU fp8 kernel;
# for these ops test_schema is replaced by test_fp8_inputs_are_not_mutated below.
FP8_INPUT_OPS = {"scaled_mm"}
ALL_BUT_SCHEMA = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("name", OPS)
def test_opcheck(name):
    torch.manual_seed(0)
    test_utils = ALL_BUT_SCHEMA if name in FP8_INPUT_OPS else "ALL"
    torch.library.opcheck(get_op(name).overload, _example(name), test_utils=test_utils)


def test_stays_call_follows_the_definition():
    """Lowering keeps exactly these ops as calls; it reads this from the op, never a list."""
    kept = {op.name for op in all_ops() if op.stays_call}
    assert {"attention", "attention_quant", "all_reduce", "all_reduce_add_rms_norm"} <= kept
    assert all(op.mutates or op.opaque or op.syncs_host for op in all_ops() if op.stays_call)
    assert not get_op("rms_norm").stays_call


@pytest.mark.parametrize("name", sorted(FP8_INPUT_OPS))
def test_fp8_inputs_are_not_mutated(name):
    args = _example(name)
    before = [a.clone() for a in args if isinstance(a, torch.Tensor)]
    out = get_op(name).overload(*args)
    after = [a for a in args if isinstance(a, torch.Tensor)]
    for b, a in zip(before, after, strict=True):
        assert torch.equal(b.view(torch.uint8), a.view(torch.uint8))
        assert out.untyped_storage().data_ptr() != a.untyped_storage().data_ptr()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_rms_norm_matches_naive(dtype, tol):
    x, w = torch.randn(T, 64, dtype=dtype) * 3, torch.randn(64, dtype=dtype)
    xd = x.double()
    expected = xd / (xd.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * w.double()
    out = torch.ops.kiln.rms_norm(x, w, 1e-6)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol)


def test_fused_add_rms_norm_matches_naive():
    x, res, w = torch.randn(T, 64), torch.randn(T, 64), torch.randn(64)
    out, new_res = torch.ops.kiln.fused_add_rms_norm(x, res, w, 1e-5)
    s = x.double() + res.double()
    expected = s / (s.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * w.double()
    torch.testing.assert_close(new_res.double(), s)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("rot_dim", [D, D // 2], ids=["full", "partial"])
def test_rotary_embedding_matches_per_element_formula(is_neox, rot_dim):
    positions = torch.tensor([0, 3, 17, 63, 40])
    q, k = torch.randn(T, HQ, D), torch.randn(T, HK, D)
    q_out, k_out = torch.ops.kiln.rotary_embedding(
        positions, q, k, rope_cache(64, rot_dim), is_neox
    )
    expected_q = naive_rotary(positions, q, rot_dim, is_neox)
    expected_k = naive_rotary(positions, k, rot_dim, is_neox)
    torch.testing.assert_close(q_out.double(), expected_q, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_out.double(), expected_k, rtol=1e-5, atol=1e-5)
    # Features past rot_dim pass through untouched (partial rotary).
    assert torch.equal(q_out[..., rot_dim:], q[..., rot_dim:])


def test_silu_and_mul_matches_naive():
    x = torch.randn(T, 2 * 48) * 4
    gate, up = x[:, :48].double(), x[:, 48:].double()
    expected = gate / (1 + torch.exp(-gate)) * up
    out = torch.ops.kiln.silu_and_mul(x)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sliding_window", [0, 3], ids=["full", "window3"])
def test_attention_matches_dense_causal_softmax(sliding_window):
    case = make_paged_case()  # mixed prefill + decode + chunked prefill, GQA 4:2, 2 pad rows
    args = case.args(scale=D**-0.5, sliding_window=sliding_window)
    out = torch.ops.kiln.attention(*args)
    expected = dense_attention(case, D**-0.5, sliding_window)
    num_real = int(case.query_start_loc[-1])
    torch.testing.assert_close(out[:num_real].double(), expected[:num_real], rtol=1e-5, atol=1e-5)


def test_attention_writes_new_kv_and_skips_padding_slots():
    case = make_paged_case(num_pad=2)
    args = case.args(scale=D**-0.5, sliding_window=0)
    k_cache, v_cache = args[3], args[4]
    torch.ops.kiln.attention(*args)
    flat_k = k_cache.view(-1, *k_cache.shape[2:])
    valid = case.slot_mapping >= 0
    assert torch.equal(flat_k[case.slot_mapping[valid]], case.k[valid])
    assert torch.equal(
        v_cache.view(-1, *v_cache.shape[2:])[case.slot_mapping[valid]], case.v[valid]
    )
    untouched = torch.ones(flat_k.shape[0], dtype=torch.bool)
    untouched[case.slot_mapping[valid]] = False
    assert torch.equal(flat_k[untouched], case.k_cache.view_as(flat_k)[untouched])


def test_all_reduce_single_rank_is_a_fresh_copy():
    x = torch.randn(T, 32)
    out = torch.ops.kiln.all_reduce(x, 1)
    assert torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()


def _all_reduce_worker(rank: int, world_size: int, init_file: str, results) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3) * (rank + 1)
    results[rank] = torch.ops.kiln.all_reduce(x, world_size)
    dist.destroy_process_group()


@pytest.mark.slow  # spawns two Python processes that import torch
def test_all_reduce_sums_over_two_gloo_ranks(tmp_path):
    """Two CPU processes: rank r holds x * (r + 1), so the sum is x * 3 on both."""
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        init_file = os.path.join(tmp_path, "rendezvous")
        procs = [
            ctx.Process(target=_all_reduce_worker, args=(r, 2, init_file, results))
            for r in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
        expected = torch.arange(6, dtype=torch.float32).reshape(2, 3) * 3
        assert torch.equal(results[0], expected) and torch.equal(results[1], expected)
