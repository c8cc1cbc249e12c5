"""The background engine loop: one thread runs the synchronous `Engine.step()`.

Handlers never call the engine directly. They submit and abort through a thread-safe command
queue that the engine thread applies between steps, and they read their outputs from one
asyncio queue per HTTP request, which the engine thread feeds with `call_soon_threadsafe`.
So `step()` never races with `add_request`/`abort`, and the event loop never blocks on a step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from runtime.outputs import RequestOutput
from runtime.sampling_params import SamplingParams
from server.errors import APIError
from server.metrics import ServerMetrics

log = logging.getLogger("kiln.server")


class RequestGroup:
    """The engine requests behind one HTTP request (prompts x n choices), in choice order."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.index = {rid: i for i, rid in enumerate(ids)}
        self.queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self.unfinished = set(ids)
        self.last: dict[str, RequestOutput] = {}  # last output seen per id (event-loop side)

    async def outputs(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Yield (choice index, output) as the engine produces them, until all finish."""
        while self.unfinished:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                raise item
            if item.request_id not in self.unfinished:
                continue  # a shutdown abort that raced with the real finish
            if item.finished:
                self.unfinished.discard(item.request_id)
            yield self.index[item.request_id], item

    def push(self, output: RequestOutput) -> None:
        self.last[output.request_id] = output
        self.queue.put_nowait(output)

    def push_aborts(self) -> None:
        """End every unfinished choice with `finish_reason="abort"` (server shutdown)."""
        for rid in sorted(self.unfinished):
            self.queue.put_nowait(_abort_output(rid, self.last.get(rid)))


def _abort_output(rid: str, prev: RequestOutput | None) -> RequestOutput:
    if prev is None:
        return RequestOutput(rid, [], [], "", [], "", finished=True, finish_reason="abort")
    return replace(
        prev, new_token_ids=[], new_text="", new_logprobs=None, finished=True, finish_reason="abort"
    )


@dataclass
class _Timing:
    arrival: float  # time.monotonic() at submit
    last_token: float | None = None


class EngineLoop:
    """Owns the engine thread; the only object that touches the engine after startup."""

    def __init__(
        self, engine, metrics: ServerMetrics, *, max_queue: int, retry_after_s: int = 1
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.stats: dict = {}  # latest engine.stats() snapshot, replaced whole by the thread
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._accepting = True
        self._owner: dict[str, RequestGroup] = {}  # engine id -> group (event-loop side)
        self._timing: dict[str, _Timing] = {}
        self._idle = asyncio.Event()
        self._in_engine: set[str] = set()  # ids added and not finished (engine-thread side)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle (event loop) -----------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.stats = dict(self.engine.stats())
        self._idle.set()
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

    def stop_accepting(self) -> None:
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def num_active(self) -> int:
        """Engine requests submitted and not yet finished or aborted."""
        return len(self._owner)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no engine request is active; False if `timeout` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    # --- requests (event loop) ------------------------------------------------------------
    async def submit(
        self, base_id: str, prompts: list[str | list[int]], params: list[SamplingParams]
    ) -> RequestGroup:
        """Add one engine request per (prompt, params); raise KilnError if the engine refuses."""
        self._check_capacity(len(prompts))
        ids = [f"{base_id}-{i}" for i in range(len(prompts))]
        group = RequestGroup(ids)
        now = time.monotonic()
        for rid in ids:
            self._owner[rid] = group
            self._timing[rid] = _Timing(now)
        self._idle.clear()
        done = self._loop.create_future()
        self._send(("add", ids, prompts, params, done))
        try:
            await done
        except BaseException:
            self.abort(group, counted=False)  # refused (400) or cancelled before it started
            raise
        return group

    def _check_capacity(self, count: int) -> None:
        if not self._accepting:
            raise APIError(
                503,
                "the server is shutting down",
                code="shutting_down",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if self.num_active + count > self.max_queue:
            raise APIError(
                503,
                f"the server is at capacity ({self.num_active} requests active, "
                f"--max-queue {self.max_queue}); retry later",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after_s)},
            )

    def abort(self, group: RequestGroup, counted: bool = True) -> None:
        """Drop the group's unfinished requests; the engine frees their KV blocks."""
        ids = [rid for rid in group.ids if self._owner.get(rid) is group]
        for rid in ids:
            self._forget(rid)
        if ids:
            self._send(("abort", ids))
            if counted:
                self.metrics.finished.inc("abort", by=len(ids))

    def abort_all(self) -> None:
        groups = {id(g): g for g in self._owner.values()}.values()
        for group in list(groups):
            group.push_aborts()
            self.abort(group)

    def _forget(self, rid: str) -> None:
        self._owner.pop(rid, None)
        self._timing.pop(rid, None)
        if not self._owner:
            self._idle.set()

    def _send(self, command: tuple) -> None:
        self._commands.put(command)
        self._wake.set()

    # --- delivery (event loop, scheduled by the engine thread) ----------------------------
    def _deliver(self, outputs: list[RequestOutput], at: float) -> None:
        for out in outputs:
            group = self._owner.get(out.request_id)
            if group is None:
                continue  # aborted meanwhile
            self._account(out, at)
            group.push(out)
            if out.finished:
                self.metrics.finished.inc(out.finish_reason or "unknown")
                self._forget(out.request_id)

    def _account(self, out: RequestOutput, at: float) -> None:
        timing = self._timing[out.request_id]
        m = self.metrics
        if out.new_token_ids:
            if timing.last_token is None:
                m.prompt_tokens.inc(by=len(out.prompt_token_ids))
                m.ttft.observe(at - timing.arrival)
            else:
                m.itl.observe((at - timing.last_token) / len(out.new_token_ids))
            timing.last_token = at
            m.generation_tokens.inc(by=len(out.new_token_ids))
        if out.finished:
            m.e2e.observe(at - timing.arrival)

    def _fail(self, ids: list[str], error: BaseException) -> None:
        for rid in ids:
            group = self._owner.get(rid)
            if group is not None:
                group.queue.put_nowait(error)
                self._forget(rid)

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
            self._loop.call_soon_threadsafe(self._fail, ids, e)
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
