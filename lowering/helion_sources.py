"""Helion kernels' plain Triton sources for a plan, generated in a process started before the
capture.

A plan runs each Helion kernel from its plain Triton source at the model's shapes
(`ir/kernels/helion_util.py`). Importing Helion (about 5 s on the 2-core CPU machine) and
generating a source (about 1 s per kernel) are single-threaded Python, as are the capture and
the passes before them. So a plan compile starts a `SourceWorker` first: it imports Helion on
another core while this process captures, then generates each source the plan's walk asks for
while this process compiles the cubins of the kernels already recorded (`CubinPool`). This
process never imports Helion. Where the worker cannot answer (it failed to start, died, or the
generation raised there), the source is generated here instead, which raises the same error
with this process's traceback.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)


def worth_a_worker() -> bool:
    """Whether a second core would run the worker beside this process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) >= 2


class SourceWorker:
    """A spawned process answering `plain_source(fn, config_json, shape_key)` requests, one
    at a time, in order (each distinct one once). A context manager: leaving it ends the
    process."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fork would copy this process's threads
        self._conn, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(theirs,), name="kiln-helion-sources", daemon=True
        )
        self._process.start()
        theirs.close()
        self._broken = False
        self._answers: dict[tuple, object] = {}

    def __enter__(self) -> SourceWorker:
        return self

    def __exit__(self, *exc) -> None:
        self._conn.close()  # a worker waiting for a request returns; one still importing is
        self._process.join(timeout=1.0)  # stopped (its imports hold nothing to clean up)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()

    def plain_source(self, fn: Callable, config_json: str, key: tuple):
        """The PlainSource of Helion kernel `fn` for a config and shape key, as
        `ir.kernels.helion_util._plain_for_args` gives it."""
        request = (fn.__module__, fn.__qualname__, config_json, key)
        if request not in self._answers:
            self._answers[request] = self._ask(fn, request)
        return self._answers[request]

    def _ask(self, fn: Callable, request: tuple):
        from ir.kernels.helion_util import _plain_for_args

        if not self._broken:
            try:
                self._conn.send(request)
                ok, value = self._conn.recv()
                if ok:
                    return value
                log.warning("the Helion source worker failed on %s:\n%s", fn.__qualname__, value)
            except (EOFError, OSError) as e:
                self._broken = True
                log.warning("the Helion source worker is gone (%s); generating here", e)
        return _plain_for_args(fn, *request[2:])


def _serve(conn) -> None:
    """The worker: import Helion, then answer requests until the pipe closes."""
    _import_helion()
    while True:
        try:
            module, qualname, config_json, key = conn.recv()
        except EOFError:
            return
        try:
            conn.send((True, _generate(module, qualname, config_json, key)))
        except Exception:  # noqa: BLE001 (the requester regenerates it and raises there)
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
