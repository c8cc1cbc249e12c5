"""The shipped plain-Triton sources, run in Triton's CPU interpreter against the IR reference.

This covers what interpret-mode Helion cannot: the Triton code Helion generated (and that
gets cross-compiled), and the hand-written Triton attention kernel, including its KV writes.
"""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ir.kernels.attention_inputs import paged_inputs
from ir.kernels.base import get_kernel, load_config, variant_config
from ir.registry import get_op
from tests.lowering.conftest import close

WORKER = Path(__file__).with_name("triton_interpret_worker.py")
bf16 = torch.bfloat16


def _rand(*shape, dtype=torch.float32, seed=0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) + 0.1).to(dtype)


def _cases() -> dict[str, tuple[str, str, str, tuple]]:
    """name -> (kernel, variant, IR op, args); small shapes keep the interpreter quick.

    Helion cases are fp32: the interpreter (numpy) mishandles bf16 casts inside kernels
    (NaNs from a correct kernel); bf16 Helion numerics are covered by the gpu tests. The fp8
    kernels are left out: the interpreter's fp32 -> e4m3 cast rounds ties up and flushes
    subnormals (100.0 -> 104, 0.0019 -> 0; torch and the GPU give 96 and 0.00195).
    """
    pos = torch.tensor([3, 0, 9, 1, 7, 2, 5])
    attn = dict(num_heads=4, num_kv_heads=2, head_size=24, block_size=4)
    seqs = [(5, 9), (1, 17), (0, 3), (7, 7)]
    return {
        "rms_norm": ("rms_norm", "default", "rms_norm", (_rand(7, 96), _rand(96), 1e-6)),
        "fused_add_rms_norm": ("fused_add_rms_norm", "default", "fused_add_rms_norm",
                               (_rand(7, 80), _rand(7, 80, seed=1), _rand(80, seed=2), 1e-6)),
        "silu_and_mul": ("silu_and_mul", "default", "silu_and_mul", (_rand(7, 144),)),
        "rope_neox": ("rotary_embedding", "neox", "rotary_embedding",
                      (pos, _rand(7, 4, 80), _rand(7, 2, 80, seed=1), _rand(12, 32))),
        "rope_gptj": ("rotary_embedding", "gptj", "rotary_embedding",
                      (pos, _rand(7, 4, 64), _rand(7, 2, 64, seed=1), _rand(12, 32))),
        "attention_bf16": ("attention", "default", "attention",
                           paged_inputs(seqs, **attn, dtype=bf16, num_padding=2)),
        "attention_window": ("attention", "default", "attention",
                             paged_inputs(seqs, **attn, dtype=torch.float32, sliding_window=5)),
        "attention_quant": ("attention_quant", "per_token", "attention_quant",
                            (*paged_inputs(seqs, **attn, dtype=bf16, num_padding=2), 0)),
        "attention_quant_group": ("attention_quant", "group128", "attention_quant",
                                  (*paged_inputs(seqs, **attn, dtype=torch.float32), 24)),
        "qk_norm_rope_neox": ("qk_norm_rope", "neox", "qk_norm_rope", _qk_args(80, 32, True)),
        "qk_norm_rope_gptj": ("qk_norm_rope", "gptj", "qk_norm_rope", _qk_args(64, 64, False)),
    }  # fmt: skip


def _qk_args(head_size: int, rot_dim: int, is_neox: bool, dtype=torch.float32) -> tuple:
    # fp32: in bf16 one flipped rounding of the normed row (an ulp of a value near 4) shows
    # through the rotation's cancellation; the gpu tests cover bf16 with that tolerance.
    """qk_norm_rope's args: 7 tokens, 3 q heads and 2 k heads of an odd-ish head size."""
    pos = torch.tensor([3, 0, 9, 1, 7, 2, 5])
    q, k = _rand(7, 3, head_size, dtype=dtype), _rand(7, 2, head_size, dtype=dtype, seed=1)
    weights = _rand(head_size, dtype=dtype, seed=2), _rand(head_size, dtype=dtype, seed=3)
    return pos, q, k, *weights, 1e-6, _rand(12, rot_dim, seed=4), is_neox


def _ref_args(name: str, args: tuple) -> tuple:
    if name.startswith("rope"):
        return (*args, name == "rope_neox")
    return args


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """Run every case's plain source in one interpreter subprocess; name -> (outputs, args)."""
    folder = tmp_path_factory.mktemp("interp")
    jobs = []
    for name, (kernel, variant, _, args) in _cases().items():
        spec = get_kernel(kernel)
        config = variant_config(load_config(kernel, "h100"), variant)
        plain = spec.plain_source(config, args, variant)
        path = folder / f"{name}.py"
        path.write_text(plain.source)
        jobs.append((name, str(path), plain.entry, copy.deepcopy(args)))
    torch.save(jobs, folder / "jobs.pt")
    env = {k: v for k, v in os.environ.items() if k != "HELION_INTERPRET"}
    env["TRITON_INTERPRET"] = "1"
    cmd = [sys.executable, str(WORKER), str(folder / "jobs.pt"), str(folder / "out.pt")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(folder / "out.pt", weights_only=False)


def close_quant_interpreted(actual: tuple, expected: tuple) -> None:
    """fp8 outputs of an interpreted kernel: scales (fp32 math) as `close_quant`; quantized
    values to one e4m3 step, except where the interpreter's fp32 -> e4m3 cast is known wrong:
    it flushes subnormals (|q| < 2**-6) and, rounding near the top of a binade, returns the
    binade's bottom power of two (126.6 -> 64 instead of 128; 119.5 -> 64 instead of 120).
    Compiled kernels use the hardware cast (gpu tests)."""
    (xq, scale, *rest), (ref_xq, ref_scale, *ref_rest) = actual, expected
    assert xq.dtype == ref_xq.dtype == torch.float8_e4m3fn and xq.shape == ref_xq.shape
    torch.testing.assert_close(scale, ref_scale, rtol=1e-2, atol=1e-12)
    got, want = xq.float(), ref_xq.float()
    power_of_two = (got != 0) & (got.abs() == torch.exp2(torch.log2(got.abs()).round()))
    ratio = want / got.where(got != 0, 1.0)
    halved = power_of_two & (ratio >= 1.75) & (ratio <= 2)
    assert halved.float().mean() < 0.05, "too many values hit the interpreter's cast fault"
    torch.testing.assert_close(got[~halved], want[~halved], rtol=0.13, atol=2**-6)
    for a, e in zip(rest, ref_rest, strict=True):
        close(a, e)


@pytest.mark.parametrize("name", list(_cases()))
def test_plain_source_matches_reference(name, interpreted):
    _, _, op, args = _cases()[name]
    ref_args = copy.deepcopy(_ref_args(name, args))
    expected = get_op(op).reference(*ref_args)
    outputs, args_after = interpreted[name]
    expected = expected if isinstance(expected, tuple) else (expected,)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    if op.endswith("_quant"):
        close_quant_interpreted(outputs, expected)
    else:
        for got, want in zip(outputs, expected, strict=True):
            close(got, want)
    if op.startswith("attention"):  # the caches were written through slot_mapping
        torch.testing.assert_close(args_after[3], ref_args[3], rtol=0, atol=0)
        torch.testing.assert_close(args_after[4], ref_args[4], rtol=0, atol=0)


def test_padding_rows_are_zero(interpreted):
    outputs, _ = interpreted["attention_bf16"]
    assert outputs[-2:].abs().sum() == 0 and outputs[:-2].abs().sum() > 0
