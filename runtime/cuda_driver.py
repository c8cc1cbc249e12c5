"""Start the CUDA driver while Python is still importing torch.

Initialising the driver (`cuInit`) costs 0.22 s of a warm start on an H100 (inside torch's
first `is_available()`), and torch cannot begin it before `import torch` has finished (1.3-2.2 s
there). It and creating the device's primary context are plain driver calls, though: a
background thread makes them through ctypes, which releases the GIL for the call, so they run
alongside the imports. When torch later initialises CUDA it finds the driver up and retains the
same primary context instead of creating it.

This is only ever a head start. Every failure (no driver, no GPU, a bad ordinal) is silent and
leaves the work, and the error message, to torch. The module imports nothing but the standard
library (and `kiln.env`), so the CLI can call it before anything heavy loads.
KILN_CUDA_PREWARM=0 turns it off, to measure it or rule it out.
"""

from __future__ import annotations

import ctypes
import threading

from kiln import env

_LIBCUDA = "libcuda.so.1"
_started: threading.Thread | None = None


def device_ordinal(device: str) -> int | None:
    """The CUDA ordinal a `--device` value will run on; None when it may not use a GPU."""
    if device in ("auto", "cuda"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


def start_driver_init(device: str = "auto") -> threading.Thread | None:
    """Begin `cuInit` and the primary context of `device`'s GPU on a daemon thread; returns it,
    or None when there is nothing to start (a CPU device, KILN_CUDA_PREWARM=0, a second call)."""
    global _started
    ordinal = device_ordinal(device)
    if ordinal is None or _started is not None or not env.cuda_prewarm_enabled():
        return None
    _started = threading.Thread(target=_init, args=(ordinal,), name="kiln-cuda-init", daemon=True)
    _started.start()
    return _started


def _init(ordinal: int) -> bool:
    """cuInit(0); cuDeviceGet; cuDevicePrimaryCtxRetain. True when the context is up.

    The retained reference is never released: torch uses the same primary context for the
    life of the process, and the driver tears it down at exit."""
    try:
        cuda = ctypes.CDLL(_LIBCUDA)
    except OSError:
        return False  # no driver on this host: a CPU machine
    dev, ctx = ctypes.c_int(0), ctypes.c_void_p()
    return (
        cuda.cuInit(0) == 0
        and cuda.cuDeviceGet(ctypes.byref(dev), ordinal) == 0
        and cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
    )
