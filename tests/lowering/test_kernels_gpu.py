"""Every kernel for real on a CUDA GPU against the IR reference (run with `-m gpu`)."""

import copy

import pytest
import torch

from ir.kernels.base import all_kernels, get_kernel
from ir.ops.paged_inputs import paged_inputs
from ir.registry import get_op
from tests.lowering.conftest import close, close_quant

pytestmark = pytest.mark.gpu
TOKENS = (1, 7, 33, 512)
DTYPES = (torch.float32, torch.bfloat16)


def impl(op: str):
    import ir.kernels  # noqa: F401

    return next(i.fn for i in get_op(op).impls if i.provider in ("helion", "triton"))


def rand(*shape, dtype=torch.float32):
    return (torch.randn(*shape, device="cuda") + 0.1).to(dtype)


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_norms_and_activation(tokens, dtype):
    x, r, w = (
        rand(tokens, 4096, dtype=dtype),
        rand(tokens, 4096, dtype=dtype),
        rand(4096, dtype=dtype),
    )
    close(impl("rms_norm")(x, w, 1e-5), get_op("rms_norm").reference(x, w, 1e-5))
    got = impl("fused_add_rms_norm")(x, r, w, 1e-5)
    for g, e in zip(got, get_op("fused_add_rms_norm").reference(x, r, w, 1e-5), strict=True):
        close(g, e)
    gate_up = rand(tokens, 2 * 1408, dtype=dtype)
    close(impl("silu_and_mul")(gate_up), get_op("silu_and_mul").reference(gate_up))


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("head_size, rot_dim", [(128, 128), (128, 64), (80, 32)])
def test_rotary(tokens, is_neox, head_size, rot_dim):
    q, k = (
        rand(tokens, 32, head_size, dtype=torch.bfloat16),
        rand(tokens, 8, head_size, dtype=torch.bfloat16),
    )
    cache = rand(4096, rot_dim)
    positions = torch.randint(0, 4096, (tokens,), device="cuda")
    args = (positions, q, k, cache, is_neox)
    for g, e in zip(
        impl("rotary_embedding")(*args), get_op("rotary_embedding").reference(*args), strict=True
    ):
        close(g, e)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sliding_window", [0, 24])
@pytest.mark.parametrize("heads", [(32, 8, 128), (8, 8, 64), (16, 2, 96)])
def test_attention(dtype, sliding_window, heads):
    num_heads, num_kv_heads, head_size = heads
    seqs = [(37, 37), (1, 300), (0, 5), (9, 70), (1, 1)]
    args = paged_inputs(seqs, num_heads=num_heads, num_kv_heads=num_kv_heads, head_size=head_size,
                        block_size=16, dtype=dtype, device="cuda", num_padding=3,
                        sliding_window=sliding_window)  # fmt: skip
    mine, theirs = copy.deepcopy(args), copy.deepcopy(args)
    close(impl("attention")(*mine), get_op("attention").reference(*theirs))
    assert torch.equal(mine[3], theirs[3]) and torch.equal(mine[4], theirs[4])


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("group_size", [0, 128])
def test_quant(tokens, group_size):
    dtype = torch.bfloat16
    x, r, w = (
        rand(tokens, 4096, dtype=dtype) * 3,
        rand(tokens, 4096, dtype=dtype),
        rand(4096, dtype=dtype),
    )
    cases = {
        "quant_fp8": (x, group_size),
        "rms_norm_quant": (x, w, 1e-5, group_size),
        "fused_add_rms_norm_quant": (x, r, w, 1e-5, group_size),
        "silu_and_mul_quant": (rand(tokens, 2 * 1408, dtype=dtype), group_size),
    }
    for op, args in cases.items():
        close_quant(impl(op)(*args), get_op(op).reference(*args))


def _cuda(value):
    return value.cuda() if isinstance(value, torch.Tensor) else value


@pytest.mark.parametrize(
    "kernel, case",
    [(k.name, c.name) for k in all_kernels() for c in (k.cases() if k.cases else ())],
)  # fmt: skip
def test_every_registered_kernel_on_its_cases(kernel, case):
    """Each kernel's own registered cases (`KernelSpec.cases`), for real on the GPU."""
    spec = get_kernel(kernel)
    found = next(c for c in spec.cases() if c.name == case)
    mine = tuple(_cuda(a) for a in copy.deepcopy(found.args))
    theirs = tuple(_cuda(a) for a in copy.deepcopy(found.args))
    provider = spec.provider
    fn = next(i.fn for i in get_op(spec.op).impls if i.provider == provider)
    got, want = fn(*mine), get_op(spec.op).reference(*theirs)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    if want[0].dtype == torch.float8_e4m3fn:
        close_quant(got, want)
    else:
        for g, w in zip(got, want, strict=True):
            close(g, w)
    for a, b in zip(mine, theirs, strict=True):  # inputs the op writes (KV caches)
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            close(a, b)


def in_graph(op: str):
    """The form lowering traces into artifacts, launched eagerly (plain Triton, no Helion)."""
    import ir.kernels  # noqa: F401

    return next(i.in_graph for i in get_op(op).impls if i.in_graph is not None)


@pytest.mark.parametrize("tokens", (1, 7, 33))
def test_in_graph_forms_match_reference(tokens):
    dtype = torch.bfloat16
    x, r, w = (rand(tokens, 4096, dtype=dtype) * 3, rand(tokens, 4096, dtype=dtype),
               rand(4096, dtype=dtype))  # fmt: skip
    gate_up = rand(tokens, 2 * 1408, dtype=dtype)
    plain = {"rms_norm": (x, w, 1e-5), "fused_add_rms_norm": (x, r, w, 1e-5),
             "silu_and_mul": (gate_up,)}  # fmt: skip
    for op, args in plain.items():
        got, want = in_graph(op)(*args), get_op(op).reference(*args)
        for g, e in zip(*(v if isinstance(v, tuple) else (v,) for v in (got, want)), strict=True):
            close(g, e)
    quant = {"quant_fp8": (x, 0), "rms_norm_quant": (x, w, 1e-5, 128),
             "fused_add_rms_norm_quant": (x, r, w, 1e-5, 0), "silu_and_mul_quant": (gate_up, 0)}  # fmt: skip
    for op, args in quant.items():
        close_quant(in_graph(op)(*args), get_op(op).reference(*args))


@pytest.mark.parametrize("tokens", (1, 7, 33, 512))
@pytest.mark.parametrize("is_neox, rot_dim", [(True, 128), (False, 128), (True, 64)])
def test_qk_norm_rope(tokens, is_neox, rot_dim):
    qkv = rand(tokens, (32 + 16) * 128, dtype=torch.bfloat16)
    q = qkv[:, : 32 * 128].view(tokens, 32, 128)  # strided views, as the model splits qkv
    k = qkv[:, 32 * 128 : 40 * 128].view(tokens, 8, 128)
    qw, kw = rand(128, dtype=torch.bfloat16), rand(128, dtype=torch.bfloat16)
    positions = torch.randint(0, 4096, (tokens,), device="cuda")
    args = (positions, q, k, qw, kw, 1e-6, rand(4096, rot_dim), is_neox)
    want = get_op("qk_norm_rope").reference(*args)
    for form in (impl("qk_norm_rope"), in_graph("qk_norm_rope")):
        for g, e in zip(form(*args), want, strict=True):
            # bf16: one flipped rounding of a normed value (|x| up to ~4) passes the rotation
            torch.testing.assert_close(g.float(), e.float(), rtol=2e-2, atol=4e-2)


@pytest.mark.parametrize("group_size", [0, 128])
def test_attention_quant_matches_reference_and_is_capturable(group_size):
    seqs = [(37, 37), (1, 300), (0, 5), (9, 70), (1, 1)]
    args = (*paged_inputs(seqs, num_heads=32, num_kv_heads=8, head_size=128, block_size=16,
                          dtype=torch.bfloat16, device="cuda", num_padding=3), group_size)  # fmt: skip
    mine, theirs = copy.deepcopy(args), copy.deepcopy(args)
    close_quant(impl("attention_quant")(*mine), get_op("attention_quant").reference(*theirs))
    assert torch.equal(mine[3], theirs[3]) and torch.equal(mine[4], theirs[4])
    graph, replay_args = torch.cuda.CUDAGraph(), copy.deepcopy(args)
    in_graph("attention_quant")(*replay_args)  # compile before capture
    with torch.cuda.graph(graph):
        captured = in_graph("attention_quant")(*replay_args)
    graph.replay()
    close_quant(captured, get_op("attention_quant").reference(*copy.deepcopy(args)))
