"""The streaming client of the serving benchmarks: one OpenAI-style request over SSE, timed
chunk by chunk (time to first token, inter-token latencies, end-to-end), and the load
generator that runs many of them from several processes.

Timing follows `vllm bench serve`: every chunk that carries a choice is a token event, text or
not (the server sends one chunk per engine step per choice, and a step whose tokens complete
no character yet sends `text: ""`); TTFT is send -> first such chunk, ITL the gaps between
them. The chat role chunk is not a token event (the server sends it just before the choice's
first token chunk, which is).

What a client process does per chunk is what it adds to every latency it measures, and one
Python process cannot keep up with tens of thousands of chunks a second: the chunks then wait
in the socket and are stamped in bursts. So the read loop only stamps each read and keeps its
bytes; lines are split and JSON decoded after the whole load ends (`parse`), and a load is
spread over worker processes (`ClientPool`), each with its own event loop.

Every stamp is `time.monotonic()`: on Linux that is CLOCK_MONOTONIC, one clock for the whole
host, so stamps taken in different worker processes (and the server's step trace) compare
directly.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import random
import signal
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

import aiohttp

from kiln.errors import KilnError

WORDS = "the model engine kiln token text write code python data test world house".split()
ERROR_EVENT = b'data: {"error"'  # the server's in-band failure; it ends the stream
START_DELAY_S = 0.2  # from handing the shares out to the common start: every worker has its job


@dataclass
class Sample:
    ok: bool
    error: str = ""
    ttft: float | None = None
    itls: list[float] = field(default_factory=list)
    e2e: float = 0.0
    tokens: int = 0
    prompt_tokens: int = 0
    response_id: str = ""  # the stream's `id`: the server's request id
    sent: float = 0.0  # time.monotonic() at send
    stamps: list[float] = field(default_factory=list)  # time.monotonic() of each token chunk
    ended: float = 0.0  # time.monotonic() once the stream closed (or the request failed)


@dataclass
class Stream:
    """One request as read off the socket: each read's bytes with the time it returned."""

    sent: float
    ended: float = 0.0
    error: str = ""
    reads: list[tuple[float, bytes]] = field(default_factory=list)


def build_body(rng: random.Random, i: int, max_tokens: int, model: str) -> tuple[str, dict]:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 24)))
    common = {
        "model": model,
        "max_tokens": max_tokens,
        "stream": True,
        "temperature": 0.8,
        "seed": rng.randrange(1 << 30),
        "stream_options": {"include_usage": True},
    }
    if i % 2:
        return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": text}]}
    return "/v1/completions", {**common, "prompt": text}


async def one_request(session: aiohttp.ClientSession, url: str, path: str, body: dict) -> Sample:
    return parse(await read_stream(session, url + path, body))


async def read_stream(session: aiohttp.ClientSession, endpoint: str, body: dict) -> Stream:
    """POST `body` and keep the response as it arrives; nothing is decoded here."""
    stream = Stream(sent=time.monotonic())
    reads = stream.reads
    try:
        async with session.post(endpoint, json=body) as resp:
            if resp.status != 200:
                stream.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
            else:
                async for data in resp.content.iter_any():
                    reads.append((time.monotonic(), data))
                    if ERROR_EVENT in data:
                        break
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        stream.error = f"{type(e).__name__}: {e}"
    stream.ended = time.monotonic()
    return stream


def parse(stream: Stream) -> Sample:
    """The sample of a stream: its token events, usage, or the error it ended with."""
    sample = Sample(ok=False, error=stream.error, sent=stream.sent, ended=stream.ended)
    if stream.error:
        return sample
    for now, line in sse_lines(stream.reads):
        if not line.startswith(b"data: {"):
            continue
        event = json.loads(line[6:])
        if "error" in event:
            sample.error = event["error"]["message"]
            return sample
        if event.get("usage"):
            sample.tokens = event["usage"]["completion_tokens"]
            sample.prompt_tokens = event["usage"]["prompt_tokens"]
        if is_token_chunk(event):
            sample.response_id = event.get("id", "")
            sample.stamps.append(now)
    sample.ok, sample.e2e = True, stream.ended - stream.sent
    if sample.stamps:
        sample.ttft = sample.stamps[0] - stream.sent
        sample.itls = [b - a for a, b in zip(sample.stamps, sample.stamps[1:])]
    return sample


def sse_lines(reads: list[tuple[float, bytes]]):
    """Complete lines, each with the time of the read that brought its last byte."""
    rest = b""
    for now, data in reads:
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            yield now, line


def is_token_chunk(event: dict) -> bool:
    """A chunk with a choice, empty text included, except the chat role chunk."""
    choices = event.get("choices") or ()
    return any("role" not in (c.get("delta") or {}) for c in choices)


# --- a load, in one process -------------------------------------------------------------------
@dataclass(frozen=True)
class Share:
    """One process's part of a load: its requests, sent by `clients` clients (each sends its
    next request when its last one ends) or, with `offsets`, request i at start + offsets[i]."""

    bodies: list[dict]
    clients: int = 0
    offsets: list[float] | None = None


def split_clients(bodies: list[dict], clients: int, procs: int) -> list[Share]:
    """`clients` over `procs` processes: client c lives in process c % procs and request i
    belongs to client i % clients, so each process holds its clients' share of requests."""
    procs = min(procs, clients)
    return [
        Share([b for i, b in enumerate(bodies) if i % clients % procs == k],
              clients=len(range(k, clients, procs)))
        for k in range(procs)
    ]  # fmt: skip


def split_arrivals(bodies: list[dict], offsets: list[float], procs: int) -> list[Share]:
    """Request i goes to process i % procs with its own send time: the processes together send
    the same requests at the same times as one process would."""
    procs = min(procs, len(bodies))
    return [Share(bodies[k::procs], offsets=offsets[k::procs]) for k in range(procs)]


async def run_share(endpoint: str, headers: dict, share: Share, start_at: float) -> list[Sample]:
    """Run `share` from `start_at` (time.monotonic()); samples in the order of its bodies,
    decoded once every request has ended."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    async with new_session(headers) as session:
        if share.offsets is None:
            streams = await _closed_loop(session, endpoint, share)
        else:
            streams = await _open_loop(session, endpoint, share, start_at)
    return [parse(s) for s in streams]


async def _closed_loop(session, endpoint: str, share: Share) -> list[Stream]:
    streams: list[Stream] = [None] * len(share.bodies)  # type: ignore[list-item]
    queue = list(reversed(range(len(share.bodies))))

    async def client() -> None:
        while queue:
            i = queue.pop()
            streams[i] = await read_stream(session, endpoint, share.bodies[i])

    await asyncio.gather(*(client() for _ in range(share.clients)))
    return streams


async def _open_loop(session, endpoint: str, share: Share, start_at: float) -> list[Stream]:
    tasks = []
    for body, offset in zip(share.bodies, share.offsets or ()):
        await asyncio.sleep(max(0.0, start_at + offset - time.monotonic()))
        tasks.append(asyncio.create_task(read_stream(session, endpoint, body)))
    return list(await asyncio.gather(*tasks))


def new_session(headers: dict) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=3600)
    return aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    )


# --- a load, over worker processes ------------------------------------------------------------
class ClientPool:
    """`procs` spawned worker processes, each running one `Share` of a load at a time with its
    own event loop and sending its samples back. Start it once per bench: it returns once every
    worker has its imports done, so no load waits for a spawn."""

    def __init__(self, procs: int, endpoint: str, headers: dict):
        ctx = mp.get_context("spawn")  # no fork of a parent that may hold threads
        self._workers: list[tuple[mp.process.BaseProcess, Connection]] = []
        for k in range(procs):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(theirs, endpoint, headers),
                               name=f"kiln-bench-client-{k}", daemon=True)  # fmt: skip
            proc.start()
            theirs.close()
            self._workers.append((proc, mine))
        self._busy = set(range(procs))
        try:
            self._gather()  # each worker's "ready"
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self._workers]

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, shares: list[Share]) -> list[Sample]:
        """Every share at once, one per worker, from a common start; all samples, share by
        share. A worker that fails or dies fails the load."""
        assert len(shares) <= len(self._workers), "more shares than client processes"
        start_at = time.monotonic() + START_DELAY_S
        for k, share in enumerate(shares):
            try:
                self._workers[k][1].send((share, start_at))
            except OSError:
                raise self._died(k) from None
            self._busy.add(k)
        results = self._gather()
        return [s for k in sorted(results) for s in results[k]]

    def _gather(self) -> dict:
        """What every busy worker sends next, by worker."""
        results = {}
        while self._busy:
            ready = set(wait([h for k in self._busy for h in self._handles(k)]))
            for k in sorted(self._busy):
                if ready & set(self._handles(k)):
                    results[k] = self._receive(k)
                    self._busy.discard(k)
        return results

    def _handles(self, k: int) -> tuple:
        proc, conn = self._workers[k]
        return conn, proc.sentinel

    def _receive(self, k: int) -> list[Sample]:
        try:
            status, payload = self._workers[k][1].recv()
        except (EOFError, OSError):
            raise self._died(k) from None
        if status != "ok":
            raise KilnError(f"bench client process {k} failed:\n{payload}")
        return payload

    def _died(self, k: int) -> KilnError:
        proc = self._workers[k][0]
        proc.join(5)
        return KilnError(
            f"bench client process {k} (pid {proc.pid}) died with exit code {proc.exitcode}; "
            "out of memory or killed? rerun, or lower --client-procs"
        )

    def close(self) -> None:
        """Idle workers exit on their own; one still running a share (the load failed) is
        terminated."""
        for k, (proc, conn) in enumerate(self._workers):
            if k in self._busy or not proc.is_alive():
                proc.terminate()
                continue
            try:
                conn.send(None)
            except OSError:
                proc.terminate()
        for proc, conn in self._workers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
            conn.close()
        self._workers, self._busy = [], set()


def _worker_main(conn: Connection, endpoint: str, headers: dict) -> None:
    """A client process: run each share it is sent until it is sent None or the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # on Ctrl-C the parent stops its workers
    conn.send(("ok", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        share, start_at = job
        try:
            conn.send(("ok", asyncio.run(run_share(endpoint, headers, share, start_at))))
        except Exception:
            conn.send(("error", traceback.format_exc()))
