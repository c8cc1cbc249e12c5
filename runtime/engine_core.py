"""The engine core: `Engine.step()` in a loop of its own process, fed and read over ZMQ.

The API server process owns HTTP, tokenizing, detokenizing, stop strings and SSE; this
process owns the engine and nothing else, so a step never competes with the event loop for
one interpreter. Per loop turn it applies every queued command (adds, aborts, deliveries),
answers the adds, runs one step and sends ONE `CoreOutputs` for all requests that moved.

The core runs at most `MAX_STEPS_AHEAD` steps ahead of the server: the server answers each
step message with `Delivered` once that step's tokens are handed to their streams, and a
core with that many unanswered steps waits for the answer before it steps again. A server
that frames and writes a step's chunks slower than the engine steps (a small model on a
fast GPU: one Python process writes some 20,000 SSE chunks a second) would otherwise fall
ever further behind, deliver steps in bursts, and show clients an inter-token latency of
zero within a burst and the whole backlog between bursts; paced, every step's chunks leave
before the next step's arrive, and the engine runs at the pace the server can deliver.
Two steps let the next step run while the server writes the last one, so an engine whose
steps outlast their delivery never waits. The
step CUDA graphs `kiln serve`'s load leaves pending are captured at the end of the first turn
(after its step's outputs are sent, or after an idle wait), so ready and a first prefill do
not wait for them.

    server --PUSH (CoreInput)--> ipc in  --> core
    server <--PULL (CoreOutputs)-- ipc out <-- core

With several API server processes (`kiln serve --api-servers N`), API server i binds its own
pair `in{i}` / `out{i}`; the core reads every `in` through one fair-queued PULL socket and
keeps one PUSH socket per `out`. It remembers which API server added each request, splits
every message by that (`EngineCore.route`), and paces each API server on its own: it steps
only while every one of them is fewer than MAX_STEPS_AHEAD steps behind.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kiln.errors import KilnError
from runtime.core_messages import (
    AbortRequests,
    AddRequests,
    CoreCodec,
    CoreInput,
    CoreOutputs,
    Delivered,
    FrontendGone,
    Rejected,
    StepInfo,
    TokenDelta,
)

log = logging.getLogger("kiln.engine_core")
STATS_INTERVAL_S = 0.1  # engine stats ride on an output message at most this often
IDLE_POLL_MS = 500  # idle: wake this often to notice a parent that died without a word
MAX_STEPS_AHEAD = 2  # step messages the server has not answered with `Delivered`, at most
READY, FAILED, OUTPUTS = b"ready", b"failed", b"out"  # first frame of a core -> server message


@dataclass(frozen=True)
class EngineInfo:
    """What the server needs of the engine, sent once (pickled) when the core is ready."""

    model_name: str
    max_model_len: int
    vocab_size: int
    tokenizer: object  # the engine's tokenizer; the server detokenizes with it
    description: str  # `loaded.describe()`: what runs (compiled artifact, eager, ...)
    stats: dict
    # How the engine started: its load phases, weight figures and wall-clock marks (the
    # caller's, plus t_ready), for `kiln serve`'s start-up report.
    startup: dict = field(default_factory=dict)


def engine_info(engine) -> EngineInfo:
    loaded = engine.loaded
    return EngineInfo(
        model_name=engine.model_name,
        max_model_len=engine.max_model_len,
        vocab_size=loaded.vocab_size,
        tokenizer=engine.tokenizer,
        description=loaded.describe(),
        stats=dict(engine.stats()),
        startup={
            "phases": dict(loaded.phases),
            "weights": dict(loaded.weight_figures),
            "marks": {**loaded.marks, "t_ready": time.time()},
        },
    )


class EngineCore:
    """Applies commands to an engine and turns each step into one `CoreOutputs`."""

    def __init__(self, engine, frontends: int = 1, max_queue: int | None = None) -> None:
        self.engine = engine
        # Requests running at most (`kiln serve --max-queue`): each API server counts its
        # own, and this count is the one for all of them.
        self.max_queue = max_queue
        engine.detokenize = False  # text is the server's; the core sends token ids
        self.frontends = frontends  # API server processes, each on its own channels
        self.running: set[str] = set()  # added, not finished or aborted
        self.shutdown = False
        self._last_stats = 0.0
        self._step_seconds = 0.0  # summed over steps since the last stats send
        self._steps = 0
        # Per API server: step messages sent and not yet answered with `Delivered`.
        self.undelivered = [0] * frontends
        self._frontend_of: dict[str, int] = {}  # request id -> its API server (several only)
        self.gone: set[int] = set()  # API servers that exited: nothing more is sent there

    @property
    def may_step(self) -> bool:
        """Something runs and no API server is MAX_STEPS_AHEAD steps behind (the slowest one
        sets the pace of all)."""
        return bool(self.running) and max(self.undelivered) < MAX_STEPS_AHEAD

    def apply(self, message: CoreInput) -> CoreOutputs | None:
        """Apply one command; adds are answered at once (accepted / rejected; `route` with
        `to=message.frontend` sends the answer), and aborts that leave nothing running report
        the freed engine."""
        frontend = getattr(message, "frontend", 0)
        if not 0 <= frontend < self.frontends:
            log.error("a %s from unknown API server %d: dropped", type(message).__name__, frontend)
            return None
        if isinstance(message, Delivered):
            self.undelivered[frontend] = max(0, self.undelivered[frontend] - message.steps)
            return None
        if isinstance(message, AddRequests):
            return self._add(message)
        if isinstance(message, AbortRequests):
            return self._abort(message.request_ids)
        if isinstance(message, FrontendGone):
            # Its requests have no one to read them, and its unanswered steps never will be.
            self.gone.add(frontend)
            self.undelivered[frontend] = 0
            return self._abort([r for r, f in self._frontend_of.items() if f == frontend])
        self.shutdown = True
        return None

    def _abort(self, request_ids: list[str]) -> CoreOutputs | None:
        for rid in request_ids:
            self.engine.abort(rid)  # frees the sequence's KV blocks
            self.running.discard(rid)
            self._frontend_of.pop(rid, None)
        return None if self.running else CoreOutputs(stats=self.stats_due(force=True))

    def _add(self, message: AddRequests) -> CoreOutputs:
        answer = CoreOutputs(accepted=[], rejected=[])
        if (
            self.max_queue is not None
            and len(self.running) + len(message.requests) > self.max_queue
        ):
            full = (f"the server is at capacity ({len(self.running)} requests active, "
                    f"--max-queue {self.max_queue}); retry later")  # fmt: skip
            answer.rejected = [Rejected(r.request_id, full, True) for r in message.requests]
            return answer
        for req in message.requests:
            try:
                self.engine.add_request(req.request_id, req.prompt_token_ids, req.params)
            except KilnError as e:
                answer.rejected.append(Rejected(req.request_id, str(e)))
                continue
            self.running.add(req.request_id)
            if self.frontends > 1:  # its outputs go there
                self._frontend_of[req.request_id] = message.frontend
            answer.accepted.append(req.request_id)
        return answer

    def step(self) -> CoreOutputs:
        """One engine step -> one message; a failing step ends every running request."""
        t0 = time.monotonic()
        try:
            outputs = self.engine.step()
        except Exception as e:  # noqa: BLE001 - reported to the server, which answers 500
            log.exception("engine step failed; failing its requests")
            for rid in self.running:
                self.engine.abort(rid)
            self.running.clear()
            self._frontend_of.clear()
            return CoreOutputs(failed=f"{type(e).__name__}: {e}")
        t1 = time.monotonic()
        self._step_seconds += t1 - t0
        self._steps += 1
        deltas = []
        for out in outputs:
            if out.finished:
                self.running.discard(out.request_id)
            deltas.append(
                TokenDelta(out.request_id, out.new_token_ids, out.finish_reason, out.new_logprobs)
            )
        sched = self.engine.last_schedule
        step = StepInfo(t0, t1, sched.num_decodes, sched.num_prefill_tokens)
        # The step that empties the batch reports at once: /metrics must show an idle engine.
        return CoreOutputs(outputs=deltas, step=step, stats=self.stats_due(force=not self.running))

    def route(self, msg: CoreOutputs, to: int | None = None) -> list[tuple[int, CoreOutputs]]:
        """Who gets what of one message, as (API server, its part) pairs; counts each step
        part sent as owed a `Delivered`. One API server gets the message whole. With several,
        an add's answer goes to its sender (`to`), each API server gets its requests' outputs,
        the step goes with every part that has outputs (the first of them counts it in
        /metrics), or to the first API server still there when no request moved; stats and a
        failure go to all. Nothing goes to an API server that is gone."""
        if self.frontends == 1:
            if msg.step is not None:
                self.undelivered[0] += 1  # the server answers every message with a step
            return [(0, msg)]
        by: list[list[TokenDelta]] = [[] for _ in range(self.frontends)]
        owner = self._frontend_of
        for delta in msg.outputs:  # the one per-request loop: kept lean
            if delta.finish_reason is None:
                by[owner.get(delta.request_id, 0)].append(delta)
            else:
                by[owner.pop(delta.request_id, 0)].append(delta)
        parts = {f: CoreOutputs(outputs=d, accepted=[], rejected=[]) for f, d in enumerate(by)
                 if d and f not in self.gone}  # fmt: skip
        present = [f for f in range(self.frontends) if f not in self.gone]
        if (msg.accepted or msg.rejected) and (to or 0) in present:
            answer = parts.setdefault(to or 0, CoreOutputs(outputs=[], accepted=[], rejected=[]))
            answer.accepted, answer.rejected = msg.accepted, msg.rejected
        if msg.step is not None and present:
            stepped = [f for f in sorted(parts) if parts[f].outputs] or present[:1]
            for i, f in enumerate(stepped):
                p = parts.setdefault(f, CoreOutputs(outputs=[], accepted=[], rejected=[]))
                p.step, p.step_shared = msg.step, i > 0
                self.undelivered[f] += 1
        if msg.failed is not None or msg.stats is not None:
            for f in present:
                p = parts.setdefault(f, CoreOutputs(outputs=[], accepted=[], rejected=[]))
                p.failed, p.stats = msg.failed, msg.stats
        return sorted(parts.items())

    def capture_pending_graphs(self) -> None:
        """Capture the step CUDA graphs the engine's load left for after ready (a prefill
        runs without them). A failure ends the core, as a failed load does: the server then
        answers 503 and exits 1."""
        loaded = self.engine.loaded
        if not loaded.graphs_pending:
            return
        try:
            loaded.capture_graphs()
        except Exception:
            log.exception("capturing the step CUDA graphs failed; the engine core exits")
            raise SystemExit(1) from None

    def stats_due(self, force: bool = False) -> dict | None:
        now = time.monotonic()
        if not force and now - self._last_stats < STATS_INTERVAL_S:
            return None
        stats = dict(self.engine.stats())
        stats["core_steps"] = self._steps
        stats["core_step_seconds"] = self._step_seconds
        self._last_stats = now
        return stats


@dataclass
class SpawnedCore:
    """A started core process and the ipc addresses it connects to (the API servers bind
    them: API server i the pair `in_addrs[i]`, `out_addrs[i]`)."""

    process: multiprocessing.Process
    folder: str  # holds the ipc socket files
    in_addrs: list[str]
    out_addrs: list[str]

    @property
    def frontends(self) -> int:
        return len(self.in_addrs)


def spawn_core(
    build: Callable[..., object],
    build_arg: object,
    *,
    fork: bool = False,
    frontends: int = 1,
    max_queue: int | None = None,
) -> SpawnedCore:
    """Start a core process that builds its engine with `build(build_arg)` (a module-level
    function and a picklable argument). Needs neither zmq nor the server's modules here, so
    `kiln serve` calls it before importing them.

    With `fork`, the core is forked from this process where `can_fork` says that is sound: it
    starts with the modules imported so far instead of a fresh interpreter that imports them
    again (and without multiprocessing's resource-tracker process). Otherwise it is spawned.
    `frontends` API server processes will talk to it, each on its own pair of channels; with
    `max_queue` it refuses adds beyond that many running requests (for all of them)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="kiln-core-")
    in_addrs = [f"ipc://{folder}/in{i}" for i in range(frontends)]
    out_addrs = [f"ipc://{folder}/out{i}" for i in range(frontends)]
    method = "fork" if fork and can_fork() else "spawn"
    proc = multiprocessing.get_context(method).Process(
        target=run_core,
        args=(build, build_arg, in_addrs, out_addrs, max_queue),
        name="kiln-engine-core",
    )
    proc.start()
    return SpawnedCore(proc, folder, in_addrs, out_addrs)


def can_fork() -> bool:
    """Whether a forked child of this process starts sound: on Linux, with no thread but the
    caller's (a fork copies only the calling thread: a lock another thread holds, Python's or
    a native library's, stays locked in the child) and torch not imported (its CUDA and
    OpenMP state do not survive a fork)."""
    if sys.platform != "linux" or "torch" in sys.modules:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1  # native threads count too
    except OSError:
        return False


def run_core(
    build: Callable[..., object],
    build_arg: object,
    in_addrs: list[str],
    out_addrs: list[str],
    max_queue: int | None = None,
) -> None:
    """The core process's main: build the engine, say ready (to every API server), loop
    until Shutdown."""
    _ignore_signals()
    import zmq

    # force: a forked core drops the server's handler (set at --log-level) for its own.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pushes = [ctx.socket(zmq.PUSH) for _ in out_addrs]
    for sock in (pull, *pushes):
        sock.setsockopt(zmq.LINGER, 0)
        sock.set_hwm(0)
    for addr in in_addrs:
        pull.connect(addr)
    for push, addr in zip(pushes, out_addrs, strict=True):
        push.connect(addr)
    try:
        engine = build(build_arg)
        info = engine_info(engine)
    except BaseException as e:  # noqa: BLE001 - the server prints it and exits non-zero
        for push in pushes:
            push.send_multipart([FAILED, f"{type(e).__name__}: {e}".encode()])
            push.close(linger=2000)
        raise SystemExit(1) from None
    ready = pickle.dumps(info)
    for push in pushes:
        push.send_multipart([READY, ready])
    try:
        _loop(EngineCore(engine, frontends=len(pushes), max_queue=max_queue), pull, pushes)
    finally:  # also on an exit from the loop: what was sent before it still goes out
        for push in pushes:
            push.close(linger=2000)
        pull.close()


def _loop(core: EngineCore, pull, pushes: list) -> None:
    codec = CoreCodec()
    parent = os.getppid()

    def send(msg: CoreOutputs, to: int | None = None) -> None:
        for f, part in core.route(msg, to):
            pushes[f].send_multipart([OUTPUTS, codec.encode(part)], copy=False)

    while not core.shutdown:
        # Blocks until a command arrives when there is nothing to step, or an API server is
        # MAX_STEPS_AHEAD steps behind (its `Delivered` wakes the core).
        timeout = 0 if core.may_step else IDLE_POLL_MS
        while pull.poll(timeout):
            message = codec.decode_input(pull.recv())
            answer = core.apply(message)
            if answer is not None:
                send(answer, getattr(message, "frontend", None))
            timeout = 0
        if core.shutdown:
            return
        if os.getppid() != parent:
            log.error("the API server process is gone; the engine core exits")
            return
        if core.may_step:
            send(core.step())
        elif not core.running:
            stats = core.stats_due()
            if stats is not None:
                send(CoreOutputs(stats=stats))
        # The first turn ends once its step's outputs are sent, or after an idle wait: the
        # graphs the load left pending are captured there, never before a first prefill.
        core.capture_pending_graphs()


def _ignore_signals() -> None:
    """Ctrl-C and SIGTERM reach the whole process group; the server decides when the core
    stops (it drains first), and tells it with `Shutdown`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
