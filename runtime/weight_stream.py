"""Stream a checkpoint's weights into one arena from the first moment of a start, on threads,
while the rest of the start-up (torch's import above all) goes on.

`WeightStream(path, device)` works on a thread of its own: it plans the copies
(`model_defs/weight_plan.py`, no torch), allocates the arena, and has `KILN_LOAD_THREADS`
threads (default: the cores, at most 8; the cores but one beside an import) copy 32 MiB chunks
of file ranges into it:
- on a GPU (`CudaArena`, through `runtime/cuda_driver.py`): a thread reads a chunk from the file
  (the page cache) into one of its two page-locked staging buffers and queues an asynchronous
  host-to-device copy on its own stream, then reads the next chunk into the other buffer while
  the first one copies. Only threads x 2 x 32 MiB is ever pinned: pinning all 16 GB of an 8B
  model would cost seconds;
- on the CPU (`HostArena`): straight into an anonymous mapping, no staging.
Reads (`os.preadv`) and driver calls release the interpreter lock, so the main thread imports
torch meanwhile. `runtime/weights.py` makes the model's parameters from the arena once torch
is up, and waits for the copies before the first forward.

`start_early` is the CLI's hook for a GPU engine, called before torch is imported; `take`
hands that stream to the engine when it reads the checkpoint onto the device the engine runs
on. A CPU engine starts its stream when it loads, on every core.
KILN_WEIGHT_STREAM=0 turns streaming off (the plain loader, `model_defs/loader.py`, reads).
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kiln import env
from kiln.errors import KilnError
from model_defs.weight_plan import WeightPlan, plan_weights

CHUNK = 32 * 2**20  # bytes per read (and per staging buffer)
_early: WeightStream | None = None


@dataclass
class StreamStats:
    """What one stream did. Seconds are wall time; `read_s` and `h2d_s` are summed over the
    threads (time inside reads; copy-engine time of the host-to-device copies)."""

    device: str
    threads: int
    bytes: int
    t_start: float  # wall clock (time.time()) when the stream began
    plan_s: float  # headers read and checked
    setup_s: float  # driver, context and arena
    copy_s: float  # first read to the last byte in place
    read_s: float
    h2d_s: float
    t_done: float  # wall clock

    def figures(self) -> dict[str, float]:
        """Numbers for a report: bandwidths in GB/s (1e9 bytes). read and h2d are what the
        threads together reached while reading or copying; copy is end to end."""
        per_thread = max(self.threads, 1)
        return {
            "bytes": float(self.bytes),
            "threads": float(self.threads),
            "plan_s": self.plan_s,
            "setup_s": self.setup_s,
            "copy_s": self.copy_s,
            "copy_gbps": _gbps(self.bytes, self.copy_s),
            "read_gbps": _gbps(self.bytes, self.read_s / per_thread),
            "h2d_gbps": _gbps(self.bytes, self.h2d_s / per_thread) if self.h2d_s else 0.0,
        }


def _gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else 0.0


class WeightStream:
    """Copies checkpoint `path` into an arena on `device` ("cpu", "cuda:N", or "auto": a GPU
    when the driver finds one) on background threads; `ready()` gives the plan and the arena,
    `wait()` returns once every byte is in place."""

    def __init__(
        self, path: Path, device: str, threads: int | None = None, *, gpu_only: bool = False
    ):
        self.path, self.requested, self.gpu_only = Path(path).resolve(), device, gpu_only
        self.device: str | None = None  # resolved by the stream's thread
        self.plan: WeightPlan | None = None
        self.arena: HostArena | CudaArena | None = None
        self.error: BaseException | None = None
        self.stats: StreamStats | None = None
        self._threads = threads or env.load_threads()
        self._planned = threading.Event()
        self._t_start = time.time()
        self._thread = threading.Thread(target=self._run, name="kiln-weights", daemon=True)
        self._thread.start()

    def ready(self) -> tuple[WeightPlan, HostArena | CudaArena]:
        """The plan and the arena (their copies may still run); raises what stopped them."""
        self._planned.wait()
        if self.error is not None and (self.plan is None or self.arena is None):
            raise self.error
        return self.plan, self.arena

    def wait(self) -> StreamStats:
        """Block until every copy is done; raises the first error of any thread."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.stats

    def discard(self) -> None:
        """Wait for the threads and drop the arena: its memory goes back now, or, once tensors
        view it, when the last of them is gone (they own it then)."""
        self._thread.join()
        if isinstance(self.arena, CudaArena) and not self.arena.viewed:
            self.arena.free()
        self.arena = None

    def _run(self) -> None:
        from model_defs.registry import read_config

        t0 = time.perf_counter()
        try:
            family, cfg = read_config(self.path)
            self.plan = plan_weights(self.path, family, cfg)
            t1 = time.perf_counter()
            self.device, self.arena = _arena(self.requested, self.plan.arena_bytes, self.gpu_only)
        except BaseException as e:  # noqa: BLE001 - handed to whoever calls ready()
            self.error = e
            self._planned.set()
            return
        self._planned.set()
        t2 = time.perf_counter()
        try:
            read_s, h2d_s, threads = self._copy()
        except BaseException as e:  # noqa: BLE001 - e.g. a shard removed since it was planned
            self.error = _as_kiln_error(e)
            return
        t3 = time.perf_counter()
        self.stats = StreamStats(self.device, threads, self.plan.data_bytes, self._t_start,
                                 t1 - t0, t2 - t1, t3 - t2, read_s, h2d_s, time.time())  # fmt: skip

    def _copy(self) -> tuple[float, float, int]:
        """Every chunk of the plan, pulled by `threads` workers from one shared counter."""
        plan, arena = self.plan, self.arena
        chunks = list(_chunks(plan))
        fds = [os.open(f, os.O_RDONLY) for f in plan.files]
        counter, totals = itertools.count(), []
        errors: list[BaseException] = []

        def work() -> None:
            read_s = h2d_s = 0.0
            try:
                worker = arena.worker()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                return
            try:
                while (i := next(counter)) < len(chunks) and not errors:
                    file, offset, nbytes, dst = chunks[i]
                    worker.copy(fds[file], offset, nbytes, dst, plan.files[file])
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
            finally:
                try:
                    read_s, h2d_s = worker.finish()
                except BaseException as e:  # noqa: BLE001
                    errors.append(e)
                totals.append((read_s, h2d_s))

        n = max(1, min(self._threads, len(chunks)))
        workers = [threading.Thread(target=work, name=f"kiln-weights-{i}") for i in range(n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for fd in fds:
            os.close(fd)
        if errors:
            self.error = _as_kiln_error(errors[0])
        return sum(t[0] for t in totals), sum(t[1] for t in totals), n


def _chunks(plan: WeightPlan):
    """(file index, file offset, bytes, arena offset) pieces of at most CHUNK bytes."""
    for c in plan.copies:
        for start in range(0, c.nbytes, CHUNK):
            n = min(CHUNK, c.nbytes - start)
            yield c.file, c.file_offset + start, n, c.arena_offset + start


def _as_kiln_error(e: BaseException) -> BaseException:
    """A copy's failure as the message a user sees (`Weights.wait` raises it)."""
    from runtime.cuda_driver import CudaError

    if isinstance(e, OSError):
        return KilnError(f"reading the weights failed: {e}")
    if isinstance(e, CudaError):
        return KilnError(
            f"copying the weights to the GPU failed: {e}; KILN_WEIGHT_STREAM=0 reads them "
            "with the plain loader instead"
        )
    return e


def read_exact(fd: int, view: memoryview, offset: int, file: Path) -> None:
    """Fill `view` from `fd` at `offset` (the page cache, or the disk)."""
    while len(view):
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            raise KilnError(f"{file} ended early: was it truncated while Kiln read it?")
        view, offset = view[n:], offset + n


# --- arenas -----------------------------------------------------------------------------------
class NoGPU(Exception):
    """An early stream found no GPU: the engine reads the weights on the CPU itself."""


def _arena(requested: str, nbytes: int, gpu_only: bool) -> tuple[str, HostArena | CudaArena]:
    """(device name, arena) for a `--device` value; "auto" is the first GPU when the driver
    has one, else the CPU (or `NoGPU` when `gpu_only`). Failing to allocate on a GPU that is
    there is an error."""
    from runtime.cuda_driver import CudaError, Driver, device_ordinal

    ordinal = device_ordinal(requested)
    try:
        if ordinal is None:
            raise NoGPU(f"--device {requested}")
        driver = Driver()
        ctx = driver.primary_context(ordinal)
    except (OSError, CudaError, NoGPU) as e:
        if requested not in ("auto", "cpu"):
            raise
        if gpu_only:
            raise NoGPU(str(e)) from None
        return "cpu", HostArena(nbytes)  # no driver or no GPU: auto runs on the CPU
    return f"cuda:{ordinal}", CudaArena(driver, ctx, ordinal, nbytes)


class HostArena:
    """The arena in host memory (an anonymous mapping): reads land in it directly."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.buffer = mmap.mmap(-1, max(nbytes, 1))
        if hasattr(mmap, "MADV_HUGEPAGE"):  # fewer page faults while the reads fill it
            self.buffer.madvise(mmap.MADV_HUGEPAGE)

    def worker(self) -> _HostWorker:
        return _HostWorker(memoryview(self.buffer))


class _HostWorker:
    def __init__(self, view: memoryview):
        self.view, self.read_s = view, 0.0

    def copy(self, fd: int, offset: int, nbytes: int, dst: int, file: Path) -> None:
        t0 = time.perf_counter()
        read_exact(fd, self.view[dst : dst + nbytes], offset, file)
        self.read_s += time.perf_counter() - t0

    def finish(self) -> tuple[float, float]:
        self.view.release()
        return self.read_s, 0.0


class CudaArena:
    """The arena in device memory, in the device's primary context (the one torch uses)."""

    def __init__(self, driver, ctx: int, ordinal: int, nbytes: int):
        self.driver, self.ctx, self.ordinal, self.nbytes = driver, ctx, ordinal, nbytes
        self.viewed = False  # set when torch views it: the views free it (runtime/weights.py)
        driver.set_current(ctx)
        self.ptr = driver.mem_alloc(max(nbytes, 1))

    def worker(self) -> _CudaWorker:
        return _CudaWorker(self)

    def free(self) -> None:
        """Give the memory back, from any thread: the thread's current context is restored
        after (it may be another device's, where engines on several GPUs share a process)."""
        if self.ptr:
            previous = self.driver.current_context()
            self.driver.set_current(self.ctx)
            try:
                self.driver.mem_free(self.ptr)
            finally:
                self.ptr = 0
                if previous != self.ctx:  # None: the thread had none, and has none again
                    self.driver.set_current(previous)


class _Staging:
    """One page-locked buffer and the events around its latest host-to-device copy."""

    def __init__(self, driver):
        self.ptr = driver.host_alloc(CHUNK)
        self.view = memoryview((ctypes.c_ubyte * CHUNK).from_address(self.ptr)).cast("B")
        self.start, self.end = driver.event_create(timing=True), driver.event_create(timing=True)
        self.pending = False


class _CudaWorker:
    """Double-buffered: read into one staging buffer while the other one copies."""

    def __init__(self, arena: CudaArena):
        self.arena, self.driver = arena, arena.driver
        self.driver.set_current(arena.ctx)  # per thread: driver calls use the current context
        self.stream = self.driver.stream_create()
        self.buffers = [_Staging(self.driver) for _ in range(2)]
        self.turn, self.read_s, self.h2d_s = 0, 0.0, 0.0

    def copy(self, fd: int, offset: int, nbytes: int, dst: int, file: Path) -> None:
        buf = self.buffers[self.turn]
        self.turn ^= 1
        self._settle(buf)  # its previous copy must be done before the read overwrites it
        t0 = time.perf_counter()
        read_exact(fd, buf.view[:nbytes], offset, file)
        self.read_s += time.perf_counter() - t0
        d = self.driver
        d.event_record(buf.start, self.stream)
        d.copy_to_device(self.arena.ptr + dst, buf.ptr, nbytes, self.stream)
        d.event_record(buf.end, self.stream)
        buf.pending = True

    def _settle(self, buf: _Staging) -> None:
        if buf.pending:
            self.driver.event_sync(buf.end)
            self.h2d_s += self.driver.event_seconds(buf.start, buf.end)
            buf.pending = False

    def finish(self) -> tuple[float, float]:
        d = self.driver
        for buf in self.buffers:
            self._settle(buf)
        d.stream_sync(self.stream)
        for buf in self.buffers:
            buf.view.release()
            d.event_destroy(buf.start)
            d.event_destroy(buf.end)
            d.host_free(buf.ptr)
        d.stream_destroy(self.stream)
        return self.read_s, self.h2d_s


# --- the CLI's early start ----------------------------------------------------------------------
def start_early(model: str, device: str) -> WeightStream | None:
    """Begin streaming `model`'s weights to the GPU of an engine about to start (call it
    before torch is imported), on the cores but one (the import keeps one). Does nothing for
    `--device cpu` (and stops at once where "auto" finds no GPU): on the 2-core CPU machine
    reading beside the import slowed the start (2.74 s against 2.33 s to ready, 1B shape), so
    a CPU engine streams its weights after the import. Nor when the checkpoint folder is not
    there yet (the demo before its first build; a bad path, which the engine's start reports),
    or with KILN_WEIGHT_STREAM=0."""
    global _early
    if _early is not None or not env.weight_stream_enabled() or device == "cpu":
        return None
    path = checkpoint_folder(model)
    if path is None:
        return None
    _early = WeightStream(path, device, env.stream_threads(), gpu_only=True)
    return _early


def take(path: Path, device: str) -> WeightStream | None:
    """The early stream, if it reads `path` onto `device` ("cpu" or "cuda:N"): it is the
    caller's from now on. A stream of anything else is discarded (its memory freed)."""
    global _early
    stream, _early = _early, None
    if stream is None:
        return None
    try:
        stream.ready()
    except BaseException:  # noqa: BLE001 - a fresh stream for this engine will say it again
        stream.discard()
        return None
    if stream.path != Path(path).resolve() or stream.device != device:
        stream.discard()
        return None
    return stream


def checkpoint_folder(model: str) -> Path | None:
    """The folder `model` names if it exists (the demo's once it is built), else None."""
    if model == "demo":
        from model_defs.demo import DEMO_NAME

        folder = env.cache_dir() / "models" / DEMO_NAME
    else:
        folder = Path(model).expanduser()
    return folder if (folder / "config.json").is_file() else None
