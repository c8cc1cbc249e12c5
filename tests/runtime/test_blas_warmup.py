"""runtime/blas_warmup.py: cuBLAS's first GEMM runs on a side thread during an engine's load."""

from __future__ import annotations

import threading

import pytest
import torch

from runtime.blas_warmup import BlasWarmup


def test_nothing_starts_off_the_gpu():
    warm = BlasWarmup(torch.device("cpu"), torch.float32)
    assert warm.thread is None and warm.join() == 0.0


def test_nothing_starts_when_turned_off(monkeypatch):
    monkeypatch.setenv("KILN_BLAS_PREWARM", "0")
    warm = BlasWarmup(torch.device("cuda", 0), torch.bfloat16)
    assert warm.thread is None and warm.join() == 0.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure path of a CPU host")
def test_a_failing_gemm_is_left_for_the_main_thread(monkeypatch):
    monkeypatch.delenv("KILN_BLAS_PREWARM", raising=False)
    warm = BlasWarmup(torch.device("cuda", 0), torch.bfloat16)  # no CUDA here: the GEMM fails
    assert warm.thread is not None
    assert warm.join() >= 0.0 and warm.thread is None


def _warmup_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "kiln-blas-warmup"]


def test_cpu_engine_load_records_no_wait():
    from kiln.config import EngineConfig
    from kiln.resolve import build_engine

    eng = build_engine(EngineConfig("demo", device="cpu", compile="never"))
    assert "blas_wait" not in eng.loaded.phases and not _warmup_threads()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float8_e4m3fn])
def test_gpu_warmup_finishes_and_a_gemm_follows(dtype):
    warm = BlasWarmup(torch.device("cuda"), dtype)
    assert warm.thread is not None
    warm.join()
    assert not _warmup_threads()
    a = torch.randn(64, 64, device="cuda")
    torch.testing.assert_close(a @ a, (a.double() @ a.double()).float(), rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
def test_gpu_engine_load_joins_it_before_the_first_forward():
    from kiln.config import EngineConfig
    from kiln.resolve import build_engine

    eng = build_engine(EngineConfig("demo", compile="never"))
    assert eng.loaded.phases["blas_wait"] >= 0.0 and not _warmup_threads()
