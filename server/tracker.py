"""Event-loop-side bookkeeping shared by both engine drivers (in-process thread, core process).

A `RequestTracker` maps engine request ids to the HTTP request (`RequestGroup`) that owns
them, enforces `--max-queue`, times tokens for /metrics, and turns aborts into one command
for the engine. Only the event-loop thread touches it. Subclasses say how commands reach the
engine (`_send_add`, `_send_abort`) and start/stop it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from runtime.outputs import RequestOutput
from runtime.sampling_params import SamplingParams
from server.errors import APIError
from server.metrics import ServerMetrics


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

    @property
    def has_more(self) -> bool:
        """More outputs are queued already (a streaming handler can hold its write)."""
        return not self.queue.empty()

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


class RequestTracker:
    """Owner map, capacity, metrics and aborts; the engine driver plugs in below."""

    def __init__(self, metrics: ServerMetrics, *, max_queue: int, retry_after_s: int = 1) -> None:
        self.metrics = metrics
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.stats: dict = {}  # the latest engine stats, replaced whole
        self.dead_reason: str | None = None  # set when the engine is gone for good
        self.died = asyncio.Event()  # set with dead_reason; the runner exits non-zero
        self._accepting = True
        self._owner: dict[str, RequestGroup] = {}  # engine id -> group
        self._timing: dict[str, _Timing] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    # --- to implement ------------------------------------------------------------------
    async def _send_add(self, ids, prompts, params) -> None:
        """Hand the requests to the engine; raise (KilnError: 400) if it refuses them."""
        raise NotImplementedError

    def _send_abort(self, ids: list[str]) -> None:
        raise NotImplementedError

    def on_stop(self) -> None:
        """The server begins to stop (SIGTERM, or the engine died); before it drains."""

    def metrics_text(self) -> str:
        """The /metrics page."""
        return self.metrics.render(self.stats)

    # --- state -------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting and self.dead_reason is None

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

    # --- requests ----------------------------------------------------------------------
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
        try:
            await self._send_add(ids, prompts, params)
        except BaseException:
            self.abort(group, counted=False)  # refused (400) or cancelled before it started
            raise
        return group

    def _check_capacity(self, count: int) -> None:
        if self.dead_reason is not None:
            raise APIError(503, f"the engine is down: {self.dead_reason}", code="engine_dead")
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
            self._send_abort(ids)
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

    # --- delivery ----------------------------------------------------------------------
    def deliver(self, out: RequestOutput, at: float) -> None:
        group = self._owner.get(out.request_id)
        if group is None:
            return  # aborted meanwhile
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

    def fail(self, ids: list[str], error: BaseException) -> None:
        """End these requests with `error` (the handler answers 500 or reports it in-band)."""
        for rid in ids:
            group = self._owner.get(rid)
            if group is not None:
                group.queue.put_nowait(error)
                self._forget(rid)

    def fail_all(self, error: BaseException) -> None:
        self.fail(list(self._owner), error)
