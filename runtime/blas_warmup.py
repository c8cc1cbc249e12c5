"""Pay cuBLAS's first-GEMM cost on a side thread while the model loads.

The first GEMM of a process costs 0.10-0.17 s on an H100, whatever its shape: a 16x16 bf16
product costs as much as the 8B model's lm_head, and after it every new shape costs only
4-20 ms (cuBLAS loads its kernels on that first call). A warm
start otherwise pays it inside its first forward, on the critical path.

`BlasWarmup` runs one small GEMM on a side thread (torch releases the GIL while cuBLAS works)
and a side stream, from as soon as the device is known; the main thread meanwhile reads the
tokenizer, builds the model and binds the artifact. `load` joins it before its first forward:
a CUDA graph capture must see no other thread's CUDA calls. Any failure is left for the main
thread's own first GEMM to report. KILN_BLAS_PREWARM=0 turns it off, to measure it or rule it
out.
"""

from __future__ import annotations

import threading
import time

import torch

from kiln import env


class BlasWarmup:
    """One small GEMM on `device` in `dtype`, on a daemon thread; `join()` before the first
    forward. Does nothing off the GPU or with KILN_BLAS_PREWARM=0."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.thread: threading.Thread | None = None
        if device.type != "cuda" or not env.blas_prewarm_enabled():
            return
        if not (dtype.is_floating_point and dtype.itemsize >= 2):
            dtype = torch.bfloat16  # fp8 weights: cuBLAS itself is what needs loading
        self.thread = threading.Thread(
            target=_gemm, args=(device, dtype), name="kiln-blas-warmup", daemon=True
        )
        self.thread.start()

    def join(self) -> float:
        """Wait for the GEMM; returns the seconds waited (0 when it had finished)."""
        if self.thread is None:
            return 0.0
        t0 = time.perf_counter()
        self.thread.join()
        self.thread = None
        return time.perf_counter() - t0


def _gemm(device: torch.device, dtype: torch.dtype) -> None:
    try:
        stream = torch.cuda.Stream(device)
        with torch.cuda.device(device), torch.cuda.stream(stream):
            a = torch.zeros(16, 16, dtype=dtype, device=device)
            a @ a
            stream.synchronize()
    except Exception:  # noqa: BLE001  (a head start only: the main thread reports errors)
        pass
