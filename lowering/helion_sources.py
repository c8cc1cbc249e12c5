"""Helion kernels' plain Triton sources for a plan, generated in a process of their own.

A plan runs each Helion kernel from its plain Triton source at the model's shapes
(`ir/kernels/helion_util.py`). Importing Helion (5-8 s on the 2-core CPU machine, torch's
Inductor and Dynamo with it) and generating a source (about 1 s per kernel) are
single-threaded Python, as are the capture and the passes before them. So a plan compile
starts a `SourceWorker` first (`kiln compile` before it even imports torch: `start_early`;
else `lowering.lowered.head_start`): it imports Helion on another core while this process
captures, then generates the sources the plan's look-ahead walk asks for, one after another,
while this process compiles the cubins of the kernels already recorded (`CubinPool`). This
process never imports Helion. Where the worker cannot answer (it failed to start, died, or the
generation raised there), the source is generated here instead, which raises the same error
with this process's traceback.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)
_early: SourceWorker | None = None  # started by `start_early`, until `take`n


def worth_a_worker() -> bool:
    """Whether a second core would run the worker beside this process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) >= 2


class SourceWorker:
    """A spawned process generating Helion kernels' plain sources, in the order asked for.
    `request(...)` asks without waiting; `plain_source(...)` waits for the answer (asking
    first if need be). Each distinct request is sent once. A context manager: leaving it ends
    the process."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fork would copy this process's threads
        self._conn, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(theirs,), name="kiln-helion-sources", daemon=True
        )
        self._process.start()
        theirs.close()
        self._broken = False
        self._sent: list[tuple] = []  # requests not yet answered, in the order sent
        self._answers: dict[tuple, tuple[bool, object]] = {}  # request -> (ok, source or error)

    def __enter__(self) -> SourceWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the worker: it exits when its pipe closes; one still importing is stopped."""
        self._conn.close()
        self._process.join(timeout=1.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()

    def request(self, fn: Callable, config_json: str, key: tuple) -> None:
        """Ask for the source of Helion kernel `fn` for a config and shape key; no wait."""
        request = (fn.__module__, fn.__qualname__, config_json, key)
        if self._broken or request in self._answers or request in self._sent:
            return
        try:
            self._conn.send(request)
            self._sent.append(request)
        except OSError as e:
            self._lost(e)

    def plain_source(self, fn: Callable, config_json: str, key: tuple):
        """The PlainSource of Helion kernel `fn` for a config and shape key, as
        `ir.kernels.helion_util._plain_for_args` gives it."""
        from ir.kernels.helion_util import _plain_for_args

        self.request(fn, config_json, key)
        request = (fn.__module__, fn.__qualname__, config_json, key)
        while request not in self._answers and request in self._sent:
            try:
                self._answers[self._sent.pop(0)] = self._conn.recv()
            except (EOFError, OSError) as e:
                self._lost(e)
        ok, value = self._answers.get(request, (False, None))
        if ok:
            return value
        if value is not None:
            log.warning("the Helion source worker failed on %s:\n%s", fn.__qualname__, value)
        return _plain_for_args(fn, config_json, key)

    def _lost(self, error: Exception) -> None:
        log.warning("the Helion source worker is gone (%s); generating here", error)
        self._broken = True
        self._sent.clear()


def start_early(target: str, lowering: str | None) -> None:
    """Start the worker for a compile about to run, before this process imports torch (the
    CLI's hook: the worker's imports then run beside this process's own). Only where a plan
    may follow: a GPU target, or `--lowering plan`. A compile that finds its artifact in the
    cache, or lowers natively, never takes it, and it ends with this process."""
    from ir.targets import get_target

    global _early
    gpu = target not in ("auto", "cpu") and get_target(target).is_cuda
    if _early is None and (gpu or lowering == "plan") and worth_a_worker():
        _early = SourceWorker()


def take() -> SourceWorker | None:
    """The worker `start_early` started, if any: the caller's from now on."""
    global _early
    worker, _early = _early, None
    return worker


def _serve(conn) -> None:
    """The worker: import Helion, then answer requests until the pipe closes. A failed import
    (Helion not installed: a plan may need none of its kernels) fails each request instead."""
    try:
        _import_helion()
        failed = None
    except Exception:  # noqa: BLE001 (the requester generates the source and raises there)
        failed = traceback.format_exc()
    while True:
        try:
            module, qualname, config_json, key = conn.recv()
        except EOFError:
            # Skip the interpreter's teardown (about 2 s with Helion imported, and the
            # requester joins this process); the exit handlers still release its semaphores.
            atexit._run_exitfuncs()
            os._exit(0)
        try:
            if failed is not None:
                raise ImportError(failed)
            conn.send((True, _generate(module, qualname, config_json, key)))
        except Exception:  # noqa: BLE001 (the requester generates the source and raises there)
            conn.send((False, traceback.format_exc()))


def _import_helion() -> None:
    """Import Helion without scikit-learn: Helion's surrogate autotuners try to import it (2.3 s
    with scipy here) and do without it; this process only generates code."""
    if "sklearn" not in sys.modules:
        sys.modules["sklearn"] = None  # `import sklearn...` raises ImportError
    import helion.language  # noqa: F401

    import ir.kernels  # noqa: F401  (the kernel modules requests name)


def _generate(module: str, qualname: str, config_json: str, key: tuple):
    from ir.kernels.helion_util import _plain_for_args

    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    return _plain_for_args(fn, config_json, key)
