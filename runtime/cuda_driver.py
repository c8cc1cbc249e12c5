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

`Driver` is the same library with each call checked: the weight stream
(`runtime/weight_stream.py`) allocates the weights' device memory and copies into it through it,
before torch is imported.
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
    """cuInit(0); cuDeviceGet; cuDevicePrimaryCtxRetain. True when the context is up."""
    try:
        Driver().primary_context(ordinal)
    except (OSError, CudaError):
        return False  # no driver on this host (a CPU machine), or no such GPU
    return True


class CudaError(Exception):
    """A driver call failed; the message names the call and the driver's error."""


_VOID_P, _SIZE, _UINT, _DEVPTR = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_uint64
_POINTER = ctypes.POINTER
# name -> argument types (every call returns a CUresult). CUdeviceptr is 64-bit; handles
# (contexts, streams, events) and host pointers are void*.
_SIGNATURES = {
    "cuInit": (_UINT,),
    "cuDeviceGet": (_POINTER(ctypes.c_int), ctypes.c_int),
    "cuDevicePrimaryCtxRetain": (_POINTER(_VOID_P), ctypes.c_int),
    "cuCtxSetCurrent": (_VOID_P,),
    "cuCtxGetCurrent": (_POINTER(_VOID_P),),
    "cuMemAlloc_v2": (_POINTER(_DEVPTR), _SIZE),
    "cuMemFree_v2": (_DEVPTR,),
    "cuMemHostAlloc": (_POINTER(_VOID_P), _SIZE, _UINT),
    "cuMemFreeHost": (_VOID_P,),
    "cuMemcpyHtoDAsync_v2": (_DEVPTR, _VOID_P, _SIZE, _VOID_P),
    "cuStreamCreate": (_POINTER(_VOID_P), _UINT),
    "cuStreamSynchronize": (_VOID_P,),
    "cuStreamDestroy_v2": (_VOID_P,),
    "cuEventCreate": (_POINTER(_VOID_P), _UINT),
    "cuEventRecord": (_VOID_P, _VOID_P),
    "cuEventSynchronize": (_VOID_P,),
    "cuEventDestroy_v2": (_VOID_P,),
    "cuGetErrorName": (ctypes.c_int, _POINTER(ctypes.c_char_p)),
}
_STREAM_NON_BLOCKING = 1  # no implicit ordering with the legacy default stream
_EVENT_DISABLE_TIMING = 2


class Driver:
    """The CUDA driver through ctypes, every call checked (a failure raises `CudaError`).
    ctypes releases the interpreter lock for each call. Raises OSError without a driver."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(_LIBCUDA)
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
        # cuEventElapsedTime became _v2 in CUDA 12.8; the old name stays for older drivers.
        self._elapsed = getattr(lib, "cuEventElapsedTime_v2", None) or lib.cuEventElapsedTime
        self._elapsed.argtypes = (_POINTER(ctypes.c_float), _VOID_P, _VOID_P)
        self._elapsed.restype = ctypes.c_int
        self.lib = lib

    def call(self, name: str, *args) -> None:
        rc = getattr(self.lib, name)(*args)
        if rc != 0:
            raise CudaError(f"{name} failed: {self.error_name(rc)} ({rc})")

    def error_name(self, rc: int) -> str:
        text = ctypes.c_char_p()
        if self.lib.cuGetErrorName(rc, ctypes.byref(text)) != 0 or not text.value:
            return "unknown error"
        return text.value.decode()

    def primary_context(self, ordinal: int) -> int:
        """Start the driver and retain `ordinal`'s primary context (the one torch uses).
        The reference is never released: the context lives as long as the process."""
        dev, ctx = ctypes.c_int(0), _VOID_P()
        self.call("cuInit", 0)
        self.call("cuDeviceGet", ctypes.byref(dev), ordinal)
        self.call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), dev)
        return ctx.value

    def current_context(self) -> int | None:
        """The calling thread's current context (None when it has none)."""
        ctx = _VOID_P()
        self.call("cuCtxGetCurrent", ctypes.byref(ctx))
        return ctx.value

    def set_current(self, ctx: int) -> None:
        """Make `ctx` current on the calling thread (driver calls act on the current one)."""
        self.call("cuCtxSetCurrent", ctx)

    def mem_alloc(self, nbytes: int) -> int:
        ptr = _DEVPTR()
        self.call("cuMemAlloc_v2", ctypes.byref(ptr), nbytes)
        return ptr.value

    def mem_free(self, ptr: int) -> None:
        self.call("cuMemFree_v2", ptr)

    def host_alloc(self, nbytes: int) -> int:
        """Page-locked host memory (what an asynchronous host-to-device copy needs)."""
        ptr = _VOID_P()
        self.call("cuMemHostAlloc", ctypes.byref(ptr), nbytes, 0)
        return ptr.value

    def host_free(self, ptr: int) -> None:
        self.call("cuMemFreeHost", ptr)

    def copy_to_device(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self.call("cuMemcpyHtoDAsync_v2", dst, src, nbytes, stream)

    def stream_create(self) -> int:
        stream = _VOID_P()
        self.call("cuStreamCreate", ctypes.byref(stream), _STREAM_NON_BLOCKING)
        return stream.value

    def stream_sync(self, stream: int) -> None:
        self.call("cuStreamSynchronize", stream)

    def stream_destroy(self, stream: int) -> None:
        self.call("cuStreamDestroy_v2", stream)

    def event_create(self, timing: bool = False) -> int:
        event = _VOID_P()
        self.call("cuEventCreate", ctypes.byref(event), 0 if timing else _EVENT_DISABLE_TIMING)
        return event.value

    def event_record(self, event: int, stream: int) -> None:
        self.call("cuEventRecord", event, stream)

    def event_sync(self, event: int) -> None:
        self.call("cuEventSynchronize", event)

    def event_seconds(self, start: int, end: int) -> float:
        """Seconds between two completed timing events."""
        ms = ctypes.c_float()
        rc = self._elapsed(ctypes.byref(ms), start, end)
        if rc != 0:
            raise CudaError(f"cuEventElapsedTime failed: {self.error_name(rc)} ({rc})")
        return ms.value / 1e3

    def event_destroy(self, event: int) -> None:
        self.call("cuEventDestroy_v2", event)
