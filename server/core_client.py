"""The server side of the engine-core process: connect to it, feed it, read it, watch it.

`connect_core` binds the channels of a core that `runtime.engine_core.spawn_core` started
and waits until its engine is built (a build error becomes a KilnError here).
`EngineCoreClient` then drives it from the event loop: prompts are tokenized here, each
step's `CoreOutputs` is read once and split per request, and detokenizing and stop strings
happen here too (a stop string aborts the request in the core). The core process exiting on its own marks the engine dead: /health answers 503,
in-flight requests fail, and `server.runner.serve` exits non-zero. With several API server
processes (server/api_servers.py) each runs one client on its own channels; API server 0's
owns the core (stops it, after the others have exited) and watches the others.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio

from kiln.errors import KilnError
from runtime.core_messages import (
    AbortRequests,
    AddRequests,
    CoreCodec,
    CoreOutputs,
    Delivered,
    FrontendGone,
    NewRequest,
    Shutdown,
)
from runtime.engine_core import FAILED, READY, EngineInfo, SpawnedCore
from server.api_servers import ApiServers, PeerProcess, SharedMetrics
from server.core_streams import CoreStreams
from server.errors import APIError
from server.metrics import ServerMetrics
from server.step_trace import StepTrace
from server.tracker import RequestTracker

log = logging.getLogger("kiln.server")
STOP_TIMEOUT_S = 10.0  # after Shutdown, the core gets this long to exit before a kill
CLOSE_LINGER_MS = 1000  # API servers 1..N-1: their last aborts may take this long to leave
# A PUSH socket with no peer blocks a send: a command to a core that is gone (or not yet
# attached) waits at most this long, so the event loop can never hang on one.
SEND_TIMEOUT_MS = 2000


@dataclass
class CoreProcess:
    """A started engine-core process and the two sockets to it (bound here)."""

    process: multiprocessing.Process | PeerProcess  # a PeerProcess in API servers 1..N-1
    push: zmq.Socket  # server -> core commands
    pull: zmq.Socket  # core -> server outputs
    folder: str  # holds the ipc socket files
    info: EngineInfo
    frontend: int = 0  # this API server's index; API server 0 owns the core
    frontends: int = 1  # API server processes in all
    others: ApiServers | None = None  # API server 0: the rest, which it watches and stops

    @property
    def owner(self) -> bool:
        return self.frontend == 0


def connect_core(spawned: SpawnedCore, frontend: int = 0) -> CoreProcess:
    """Bind the sockets a spawned core connects to for API server `frontend` and wait until
    it is ready. The core may have been spawned before this module was imported (its sockets
    reconnect until bound): `kiln serve` spawns it first and imports the server while it
    starts. API servers 1..N-1 did not start the core; they follow it by pid."""
    ctx = zmq.Context.instance()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    for sock in (push, pull):
        sock.setsockopt(zmq.LINGER, 0)
        sock.set_hwm(0)  # no queue limit: messages are never dropped for a full queue
    push.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)  # only a core that is not attached waits
    owner = frontend == 0
    try:
        proc = spawned.process if owner else PeerProcess(spawned.process.pid)
    except OSError:  # already exited (and reaped)
        raise KilnError("the engine core process exited before it was ready") from None
    try:
        push.bind(spawned.in_addrs[frontend])
        pull.bind(spawned.out_addrs[frontend])
        info = _wait_ready(proc, pull)
    except BaseException:
        if owner:
            proc.kill()
            proc.join(10)
            shutil.rmtree(spawned.folder, ignore_errors=True)
        raise
    return CoreProcess(proc, push, pull, spawned.folder, info, frontend, spawned.frontends)


def _wait_ready(proc: multiprocessing.Process, pull: zmq.Socket) -> EngineInfo:
    while not pull.poll(200):
        if not proc.is_alive():
            raise KilnError(f"{_exited(proc)} before it was ready; see the messages above")
    kind, payload = pull.recv_multipart()
    if kind == FAILED:
        raise KilnError(f"the engine could not start: {payload.decode()}")
    if kind != READY:
        raise KilnError(f"the engine core sent {kind!r} before it was ready")
    return pickle.loads(payload)


class EngineCoreClient(RequestTracker):
    """The engine driver `create_app` uses for an engine running in a `CoreProcess`."""

    def __init__(
        self,
        core: CoreProcess,
        metrics: ServerMetrics,
        *,
        max_queue: int,
        retry_after_s: int = 1,
        step_trace: Path | None = None,
        shutdown_timeout: float = 10.0,
    ) -> None:
        super().__init__(metrics, max_queue=max_queue, retry_after_s=retry_after_s)
        self.shutdown_timeout = shutdown_timeout  # how long the other API servers may drain
        self._others_deadline: float | None = None  # time.monotonic() they must exit by
        self._trace = StepTrace(step_trace) if step_trace is not None else None
        self.core = core
        info = core.info
        self.model_name, self.max_model_len = info.model_name, info.max_model_len
        self.tokenizer, self.description = info.tokenizer, info.description
        self.stats = dict(info.stats)
        self.streams = CoreStreams(info.tokenizer, info.vocab_size, info.max_model_len)
        self._codec = CoreCodec()
        self._pending: dict[str, asyncio.Future] = {}  # request id -> its add's answer
        self._reader: asyncio.Task | None = None
        self._pull: zmq.asyncio.Socket | None = None
        self._shut_down = False
        self._core_gone = False  # the core process exited
        self._shared = None  # several API servers: /metrics adds up all of them
        if core.frontends > 1:
            self._shared = SharedMetrics(core.folder, core.frontend, core.frontends)
        self._publisher: asyncio.Task | None = None

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._pull = zmq.asyncio.Socket.from_socket(self.core.pull)
        self._reader = asyncio.create_task(self._read(), name="kiln-core-reader")
        loop.add_reader(self.core.process.sentinel, self._on_core_exit)
        if self.core.others is not None:
            self.core.others.watch(self._on_peer_exit)
        if self._shared is not None:
            self._publisher = asyncio.create_task(self._shared.run(self.metrics))

    def on_stop(self) -> None:
        """SIGTERM or a failure stops this API server: the others drain alongside it, for as
        long as this one may."""
        if self.core.others is not None and self._others_deadline is None:
            self._others_deadline = time.monotonic() + self.shutdown_timeout + STOP_TIMEOUT_S
            self.core.others.terminate()

    def metrics_text(self) -> str:
        metrics = self.metrics if self._shared is None else self._shared.merged(self.metrics)
        return metrics.render(self.stats)

    async def stop(self) -> None:
        """Abort what is left; API server 0 then waits for the others to exit, tells the core
        to stop and waits for it (killing it if it hangs)."""
        self.stop_accepting()
        self.abort_all()
        proc = self.core.process
        asyncio.get_running_loop().remove_reader(proc.sentinel)
        if self._publisher is not None:
            self._publisher.cancel()
            self._shared.publish(self.metrics)  # the last figures, for the others' /metrics
        if not self.core.owner:
            self._shut_down = True
            self._close(linger_ms=CLOSE_LINGER_MS)  # the aborts above still reach the core
            return
        if self.core.others is not None:
            self.on_stop()  # they drain alongside this one, and are done or nearly done
            left = max(0.0, self._others_deadline - time.monotonic())
            if not await self.core.others.wait(left) and self.dead_reason is None:
                self.dead_reason = "an API server process did not exit cleanly"
                self.died.set()
        alive = proc.is_alive()
        if alive:
            self._send(Shutdown())
        self._shut_down = True  # nothing reaches the core after Shutdown
        if alive:
            await asyncio.to_thread(proc.join, STOP_TIMEOUT_S)
            if proc.is_alive():
                log.warning("the engine core did not stop within %.0f s; killing it",
                            STOP_TIMEOUT_S)  # fmt: skip
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
        self._close()
        shutil.rmtree(self.core.folder, ignore_errors=True)

    def _close(self, linger_ms: int = 0) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._trace is not None:
            self._trace.close()
        self.core.push.close(linger=linger_ms)
        self.core.pull.close()

    # --- commands ------------------------------------------------------------------------
    async def _send_add(self, ids, prompts, params) -> None:
        """Tokenize here (bad prompts are 400s at once), then wait for the core's answer."""
        new = [
            NewRequest(rid, self.streams.open(rid, prompt, p), p)
            for rid, prompt, p in zip(ids, prompts, params, strict=True)
        ]
        loop = asyncio.get_running_loop()
        answers = [loop.create_future() for _ in ids]
        self._pending.update(zip(ids, answers, strict=True))
        try:
            # A failed send: the caller's abort closes the streams.
            if not self._send(AddRequests(new, self.core.frontend)):
                raise APIError(503, "the engine core is not reachable; retry later",
                               code="engine_unavailable")  # fmt: skip
            await asyncio.gather(*answers)
        finally:
            for rid in ids:
                self._pending.pop(rid, None)

    def _send_abort(self, ids: list[str]) -> None:
        self.streams.close(ids)
        self._send(AbortRequests(ids))

    def _send(self, message) -> bool:
        """A command; False if it could not be sent. Blocks at most SEND_TIMEOUT_MS (the
        socket's send timeout), which only a core that is not attached can cost; once the
        core process has exited nothing more is tried (its exit callback ends the requests).
        A failure elsewhere (another API server's exit) leaves the core reachable: aborts
        and Shutdown still go."""
        if self._shut_down or self._core_gone:
            return False
        try:
            self.core.push.send(self._codec.encode(message), copy=False)
            return True
        except zmq.Again:
            self._core_gone = not self.core.process.is_alive()
            log.warning("the engine core did not take a %s; dropped", type(message).__name__)
            return False

    def _send_delivered(self, data: bytes) -> None:
        """The answer to a step message, never blocking: the core that sent the step is
        connected unless it has exited since (after `Shutdown`, or a crash), and then the
        answer has no one to reach."""
        if not self._shut_down and not self._core_gone:
            try:
                self.core.push.send(data, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                pass

    # --- outputs -------------------------------------------------------------------------
    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        delivered = self._codec.encode(Delivered(1, self.core.frontend))
        while True:
            kind, payload = await self._pull.recv_multipart()
            at = time.monotonic()
            msg = self._codec.decode_outputs(payload)
            try:
                self._on_outputs(msg, at)
            except Exception:  # noqa: BLE001 - one bad message must not stop the reader
                log.exception("handling the engine core's outputs failed")
            if msg.step is None:
                continue
            if not msg.step_shared:  # another API server counts it
                self.metrics.step.observe(msg.step.ended - msg.step.started)
            if self._trace is not None:
                ids = [d.request_id for d in msg.outputs]
                self._trace.record(msg.step, at, time.monotonic(), ids)
            # Answered once the handlers this step woke have run (they were scheduled first,
            # and a handler hands its chunk to the transport, or holds it for the next one
            # already queued, before it next waits): the core steps at most MAX_STEPS_AHEAD
            # steps ahead of what the handlers took.
            loop.call_soon(self._send_delivered, delivered)
            # Let this step's handlers run before the next message is read: read at once, a
            # queued next step would reach each handler with this one, and it would write
            # both in one chunk burst.
            await asyncio.sleep(0)

    def _on_outputs(self, msg: CoreOutputs, at: float) -> None:
        for rid in msg.accepted:
            _settle(self._pending.get(rid), None)
        for r in msg.rejected:
            error = (APIError(503, r.message, code="queue_full",
                              headers={"Retry-After": str(self.retry_after_s)})
                     if r.queue_full else KilnError(r.message))  # fmt: skip
            _settle(self._pending.get(r.request_id), error)
        if msg.failed is not None:
            error = RuntimeError(f"engine step failed: {msg.failed}")
            self.fail(self.streams.close_all(), error)
        for delta in msg.outputs:
            out, stopped_here = self.streams.advance(delta)
            if out is None:
                continue  # aborted meanwhile
            if stopped_here:
                self._send(AbortRequests([delta.request_id]))  # the core knows no stop strings
            self.deliver(out, at)
        if msg.stats is not None:
            self.stats = msg.stats

    def _on_core_exit(self) -> None:
        proc = self.core.process
        asyncio.get_running_loop().remove_reader(proc.sentinel)
        proc.join(1)
        self._core_gone = True
        self._die(_exited(proc))

    def _on_peer_exit(self, index: int, code: int | None) -> None:
        """API server `index` exited: the core forgets it. One that drained and exited 0 (a
        SIGTERM of its own) leaves the rest serving; any other exit is a failure of all."""
        self._send(FrontendGone(index))
        if code == 0 or (self.core.others is not None and self.core.others.stopping):
            log.info("API server process %d exited with code %s", index, code)
        elif self.dead_reason is None:
            self._die(f"API server process {index} exited with code {code}")

    def _die(self, reason: str) -> None:
        self.dead_reason = reason
        log.error("%s; failing %d requests", self.dead_reason, self.num_active)
        error = RuntimeError(self.dead_reason)
        for future in self._pending.values():
            _settle(future, error)
        self.streams.close_all()
        self.fail_all(error)
        self.died.set()


def _exited(proc) -> str:
    code = "" if proc.exitcode is None else f" with code {proc.exitcode}"
    return f"the engine core process exited{code}"


def _settle(future: asyncio.Future | None, error: BaseException | None) -> None:
    if future is None or future.done():
        return  # cancelled meanwhile, or already answered
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
