"""Every registered kernel's plain-Triton source, run in Triton's CPU interpreter against its
IR op's reference, on the cases the kernel registers (`KernelSpec.cases`).

This covers what interpret-mode Helion cannot: the Triton code Helion generated (and that
gets cross-compiled), and hand-written Triton kernels, including their KV-cache writes. A
kernel without cases fails here with what to add; one whose source the interpreter cannot
run says why in `KernelSpec.no_triton_interpreter`.
"""

import copy
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ir.kernels.base import all_kernels, load_config, variant_config
from ir.registry import get_op
from tests.lowering.conftest import close

WORKER = Path(__file__).with_name("triton_interpret_worker.py")
KERNELS = [k.name for k in all_kernels()]


def _cases() -> dict[str, tuple]:
    """ "kernel.case" -> (spec, case) for every interpretable kernel."""
    found = {}
    for spec in all_kernels():
        if spec.cases is not None and not spec.no_triton_interpreter:
            found.update({f"{spec.name}.{c.name}": (spec, c) for c in spec.cases()})
    return found


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_has_cases(kernel):
    spec = next(k for k in all_kernels() if k.name == kernel)
    assert spec.cases is not None and spec.cases(), (
        f"kernel {kernel!r} registers no test cases: pass cases=lambda: (KernelCase(...),) "
        f"to its KernelSpec / register_helion_kernel in ir/kernels/{kernel}.py"
    )
    assert {c.variant for c in spec.cases()} <= set(spec.variants)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """Run every case's plain source in one interpreter subprocess; name -> (outputs, args)."""
    folder = tmp_path_factory.mktemp("interp")
    jobs = []
    for name, (spec, case) in _cases().items():
        config = variant_config(load_config(spec.name, "h100"), case.variant)
        plain = spec.plain_source(config, case.launch_args, case.variant)
        path = folder / f"{name}.py"
        path.write_text(plain.source)
        jobs.append((name, str(path), plain.entry, copy.deepcopy(case.launch_args)))
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
    spec, case = _cases()[name]
    op = get_op(spec.op)
    ref_args = copy.deepcopy(case.args)
    expected = op.reference(*ref_args)
    outputs, launch_after = interpreted[name]
    expected = expected if isinstance(expected, tuple) else (expected,)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    if outputs[0].dtype == torch.float8_e4m3fn:
        close_quant_interpreted(outputs, expected)
    else:
        for got, want in zip(outputs, expected, strict=True):
            close(got, want)
    # Inputs the op writes (the KV cache) are written alike. Launch and op arguments line
    # up by name: the entry's arguments are the op's unless the case gives `launch`.
    if op.mutates and case.launch is None:
        names = list(inspect.signature(op.reference).parameters)
        for arg in op.mutates:
            i = names.index(arg)
            close(launch_after[i], ref_args[i])  # bf16: the interpreter's casts may truncate


def test_padding_rows_are_zero(interpreted):
    outputs, _ = interpreted["attention.bf16"]
    assert outputs[-2:].abs().sum() == 0 and outputs[:-2].abs().sum() > 0
