"""The `library` fp8 GEMM (`torch._scaled_mm`, row-wise scales) against the IR reference.

On the CPU this runs where torch's CPU `_scaled_mm` takes row-wise scales (torch 2.13 does);
the dispatch still keeps the reference there (`needs_fp8`: a CUDA target). The gpu test runs
cuBLASLt on the device."""

from __future__ import annotations

import pytest
import torch

from ir.kernels.scaled_mm import fast_path_refusal, scaled_mm
from ir.ops.quant import quantize_weight_per_channel
from ir.registry import choose, get_op
from ir.targets import get_target


def operands(t: int, k: int, n: int, group: int = 0, device: str = "cpu", seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(t, k, generator=gen) + 0.1).to(torch.bfloat16).to(device)
    w = (torch.randn(n, k, generator=gen) * 0.2).to(torch.bfloat16).to(device)
    xq, x_scale = get_op("quant_fp8").reference(x, group)
    wq, w_scale = quantize_weight_per_channel(w)
    return xq, x_scale, wq, w_scale


def cpu_scaled_mm_runs() -> bool:
    a = torch.ones(16, 16).to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(a, a.t(), torch.ones(16, 1), torch.ones(1, 16), out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError):
        return False
    return True


def check(device: str, t: int, k: int, n: int, bias: bool) -> None:
    xq, x_scale, wq, w_scale = operands(t, k, n, device=device)
    b = torch.randn(n).to(torch.bfloat16).to(device) if bias else None
    assert fast_path_refusal(xq, x_scale, wq, w_scale, torch.bfloat16) is None
    got = scaled_mm(xq, x_scale, wq, w_scale, b, torch.bfloat16)
    want = get_op("scaled_mm").reference(xq, x_scale, wq, w_scale, b, torch.bfloat16)
    assert got.shape == want.shape == (t, n) and got.dtype == torch.bfloat16
    # bf16 output: one rounding of the fp32 accumulator (plus one of the bias sum)
    torch.testing.assert_close(got.float(), want.float(), rtol=1.6e-2, atol=1e-2)


@pytest.mark.skipif(not cpu_scaled_mm_runs(), reason="this torch's CPU _scaled_mm refuses")
@pytest.mark.parametrize("t, k, n", [(1, 32, 16), (7, 96, 48), (33, 128, 80)])
@pytest.mark.parametrize("bias", [False, True])
def test_row_wise_matches_reference_on_cpu(t, k, n, bias):
    check("cpu", t, k, n, bias)


@pytest.mark.gpu
@pytest.mark.parametrize("t, k, n", [(1, 4096, 6144), (7, 4096, 4096), (33, 14336, 4096)])
def test_row_wise_matches_reference_on_gpu(t, k, n):
    check("cuda", t, k, n, bias=False)


def test_layouts_it_refuses_take_the_reference():
    xq, x_scale, wq, w_scale = operands(5, 64, 32, group=16)
    why = fast_path_refusal(xq, x_scale, wq, w_scale, torch.bfloat16)
    assert "per-group" in why
    got = scaled_mm(xq, x_scale, wq, w_scale, None, torch.bfloat16)
    want = get_op("scaled_mm").reference(xq, x_scale, wq, w_scale, None, torch.bfloat16)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    xq, x_scale, wq, w_scale = operands(5, 40, 32)
    assert "multiples of 16" in fast_path_refusal(xq, x_scale, wq, w_scale, torch.bfloat16)
    assert "bfloat16" in fast_path_refusal(*operands(5, 64, 32), torch.float32)


def test_dispatch_picks_the_triton_dispatcher_on_fp8_gpus_and_says_why_not_on_cpu():
    """On fp8 GPUs the `triton` implementation runs (its small-M kernel, or this library call
    above the pinned max_m; tests/lowering/test_scaled_mm_small_m.py)."""
    import ir.kernels  # noqa: F401  (registers the triton implementation)

    for target in ("h100", "h200", "b200"):
        assert choose("scaled_mm", get_target(target)).chosen.provider == "triton"
    cpu = choose("scaled_mm", get_target("cpu"))
    assert cpu.chosen.provider == "reference"
    assert dict(cpu.rejected)["library"].startswith("cuBLASLt fp8 GEMM needs a CUDA target")
    assert "needs a CUDA target" in dict(cpu.rejected)["triton"]
