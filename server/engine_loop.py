"""The in-process engine driver: one thread runs the synchronous `Engine.step()`.

`kiln serve` runs the engine in its own process (`server/core_client.py`); this driver keeps
the engine in the server process, which tests use with small fake engines. Handlers never call
the engine directly. Commands go through a thread-safe queue that the engine thread applies
between steps, and outputs come back with `call_soon_threadsafe`, so `step()` never races with
`add_request`/`abort`. (Sharing one interpreter with the event loop slows steps down under
load: see docs/serving.md.)
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time

from runtime.outputs import RequestOutput
from server.metrics import ServerMetrics
from server.tracker import RequestGroup, RequestTracker

log = logging.getLogger("kiln.server")
__all__ = ["EngineLoop", "RequestGroup"]


class EngineLoop(RequestTracker):
    """Owns the engine thread; the only object that touches the engine after startup."""

    def __init__(
        self, engine, metrics: ServerMetrics, *, max_queue: int, retry_after_s: int = 1
    ) -> None:
        super().__init__(metrics, max_queue=max_queue, retry_after_s=retry_after_s)
        self.engine = engine
        self.model_name = engine.model_name
        self.max_model_len = engine.max_model_len
        self.tokenizer = engine.tokenizer
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._in_engine: set[str] = set()  # ids added and not finished (engine-thread side)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.stats = dict(self.engine.stats())
        self._thread = threading.Thread(target=self._run, name="kiln-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Abort what is left, then end the engine thread after its current step."""
        self.stop_accepting()
        self.abort_all()
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def _send_add(self, ids, prompts, params) -> None:
        done = self._loop.create_future()
        self._send(("add", ids, prompts, params, done))
        await done

    def _send_abort(self, ids: list[str]) -> None:
        self._send(("abort", ids))

    def _send(self, command: tuple) -> None:
        self._commands.put(command)
        self._wake.set()

    # --- delivery (event loop, scheduled by the engine thread) ----------------------------
    def _deliver(self, outputs: list[RequestOutput], at: float) -> None:
        for out in outputs:
            self.deliver(out, at)

    # --- the engine thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            if not self._in_engine:
                self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            self._apply_commands()
            if self._in_engine:
                self._step()
            self.stats = dict(self.engine.stats())

    def _apply_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            if command[0] == "add":
                self._apply_add(*command[1:])
            else:
                for rid in command[1]:
                    self.engine.abort(rid)
                    self._in_engine.discard(rid)

    def _apply_add(self, ids, prompts, params, done: asyncio.Future) -> None:
        added: list[str] = []
        error: BaseException | None = None
        try:
            for rid, prompt, p in zip(ids, prompts, params, strict=True):
                self.engine.add_request(rid, prompt, p)
                added.append(rid)
        except Exception as e:  # KilnError -> 400 in the handler; anything else -> 500
            error = e
            for rid in added:
                self.engine.abort(rid)
            added = []
        self._in_engine.update(added)
        self._loop.call_soon_threadsafe(_settle, done, error)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as e:
            log.exception("engine step failed; failing its requests")
            ids = sorted(self._in_engine)
            for rid in ids:
                self.engine.abort(rid)
            self._in_engine.clear()
            self._loop.call_soon_threadsafe(self.fail, ids, e)
            return
        for out in outputs:
            if out.finished:
                self._in_engine.discard(out.request_id)
        self._loop.call_soon_threadsafe(self._deliver, outputs, time.monotonic())


def _settle(done: asyncio.Future, error: BaseException | None) -> None:
    if done.done():
        return  # the handler was cancelled meanwhile
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
