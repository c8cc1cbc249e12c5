"""Every Helion kernel against its IR reference, in Helion's interpret mode (HELION_INTERPRET=1).

Interpret mode runs the kernel body eagerly in torch, so this checks the kernel's logic and
its host-side views; `test_triton_interpret.py` runs the generated Triton on the CPU too.
`test_registered_helion_kernel` runs every registered Helion kernel on its own cases; the
tests below it add token counts and dtypes per kernel.
"""

import pytest
import torch

from ir.kernels.base import all_kernels
from ir.registry import get_op
from tests.lowering.conftest import close, close_quant

HELION_CASES = {
    f"{k.name}.{c.name}": (k, c)
    for k in all_kernels()
    if k.provider == "helion" and k.cases is not None
    for c in k.cases()
}  # kernels without cases fail test_triton_interpret.py::test_every_kernel_has_cases

TOKENS = (1, 7, 33)
DTYPES = (torch.float32, torch.bfloat16)


def impl(op: str, provider: str = "helion"):
    import ir.kernels  # noqa: F401

    return next(i.fn for i in get_op(op).impls if i.provider == provider)


def ref(op: str):
    return get_op(op).reference


@pytest.mark.parametrize("name", list(HELION_CASES))
def test_registered_helion_kernel(name):
    spec, case = HELION_CASES[name]
    got, want = impl(spec.op)(*case.args), ref(spec.op)(*case.args)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    if want[0].dtype == torch.float8_e4m3fn:
        close_quant(got, want)
    else:
        for g, w in zip(got, want, strict=True):
            close(g, w)


def test_helion_is_not_imported_by_registration():
    import subprocess
    import sys

    code = "import sys, ir.kernels; sys.exit('helion' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm(tokens, dtype, rand):
    x, w = rand(tokens, 96, dtype=dtype), rand(96, dtype=dtype)
    close(impl("rms_norm")(x, w, 1e-6), ref("rms_norm")(x, w, 1e-6))


def test_rms_norm_keeps_leading_dims(rand):
    x, w = rand(2, 3, 40), rand(40)
    close(impl("rms_norm")(x, w, 1e-5), ref("rms_norm")(x, w, 1e-5))


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_rms_norm(tokens, dtype, rand):
    x, r, w = rand(tokens, 80, dtype=dtype), rand(tokens, 80, dtype=dtype), rand(80, dtype=dtype)
    out, res = impl("fused_add_rms_norm")(x, r, w, 1e-6)
    ref_out, ref_res = ref("fused_add_rms_norm")(x, r, w, 1e-6)
    close(out, ref_out)
    close(res, ref_res)


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul(tokens, dtype, rand):
    x = rand(tokens, 2 * 72, dtype=dtype)
    close(impl("silu_and_mul")(x), ref("silu_and_mul")(x))


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("head_size, rot_dim", [(64, 64), (64, 32), (80, 32)])
def test_rotary_embedding(tokens, dtype, is_neox, head_size, rot_dim, rand):
    q, k = rand(tokens, 4, head_size, dtype=dtype), rand(tokens, 2, head_size, dtype=dtype)
    cache = rand(50, rot_dim)
    positions = torch.randint(0, 50, (tokens,), generator=torch.Generator().manual_seed(tokens))
    args = (positions, q, k, cache, is_neox)
    for got, want in zip(
        impl("rotary_embedding")(*args), ref("rotary_embedding")(*args), strict=True
    ):
        close(got, want)


def test_rotary_rejects_unsupported_rot_dim(rand):
    from kiln.errors import KilnError

    q = rand(3, 2, 64)
    with pytest.raises(KilnError, match="rot_dim"):
        impl("rotary_embedding")(torch.zeros(3, dtype=torch.long), q, q, rand(8, 24), True)


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group_size", [0, 16])
def test_quant_kernels(tokens, dtype, group_size, rand):
    x, r, w = (
        rand(tokens, 64, dtype=dtype) * 3,
        rand(tokens, 64, dtype=dtype),
        rand(64, dtype=dtype),
    )
    cases = {
        "quant_fp8": (x, group_size),
        "rms_norm_quant": (x, w, 1e-6, group_size),
        "fused_add_rms_norm_quant": (x, r, w, 1e-6, group_size),
        "silu_and_mul_quant": (rand(tokens, 128, dtype=dtype), group_size),
    }
    for op, args in cases.items():
        close_quant(impl(op)(*args), ref(op)(*args))


def test_quant_kernels_use_the_ir_constants(rand):
    """Every quant kernel's scale is amax / FP8_MAX, floored at MIN_SCALE for a zero row: the
    kernels spell both as literals, so a drifted literal fails here."""
    from ir.ops.quant import FP8_MAX, MIN_SCALE

    x, w = rand(4, 64) * 3, rand(64)
    x[1] = 0
    cases = {
        "quant_fp8": ((x, 0), x),
        "rms_norm_quant": ((x, w, 1e-6, 0), ref("rms_norm")(x, w, 1e-6)),
        "fused_add_rms_norm_quant": (
            (x, torch.zeros_like(x), w, 1e-6, 0),
            ref("rms_norm")(x, w, 1e-6),
        ),
        "silu_and_mul_quant": (
            (torch.cat([x, x], 1), 0),
            ref("silu_and_mul")(torch.cat([x, x], 1)),
        ),
    }
    for op, (args, value) in cases.items():
        scale = impl(op)(*args)[1][:, 0]
        want = value.float().abs().amax(dim=1) / FP8_MAX
        assert scale[1] == MIN_SCALE, op
        torch.testing.assert_close(scale[[0, 2, 3]], want[[0, 2, 3]], rtol=1e-5, atol=0)


def test_quant_rejects_a_bad_group_size(rand):
    with pytest.raises(ValueError, match="group_size=24"):
        impl("quant_fp8")(rand(3, 64), 24)
