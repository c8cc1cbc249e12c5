"""The load generator of `kiln bench serve`: chunk timing, the split of a load over client
processes and the merge of their samples, against a small SSE server in a thread."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time

import pytest
from aiohttp import web

from kiln.benchmarking.serve import Slo, arrival_offsets, load_span, summarize
from kiln.benchmarking.serve_client import (
    ClientPool,
    Share,
    Stream,
    parse,
    split_arrivals,
    split_clients,
    sse_lines,
)
from kiln.errors import KilnError

pytestmark = pytest.mark.timeout(60)


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class FakeServer:
    """`/v1/completions` streaming `max_tokens` chunks, one per `prompt[1]` seconds, with the
    stream id `cmpl-<prompt[0]>`; it records when each request came and went and how many
    were in flight at most."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.in_flight = self.max_in_flight = 0

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        rid, gap = body["prompt"]
        self.arrived[rid] = time.monotonic()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(body["max_tokens"]):
            await asyncio.sleep(gap)
            await resp.write(_event({"id": f"cmpl-{rid}", "choices": [{"index": 0, "text": "x"}]}))
        usage = {"completion_tokens": body["max_tokens"], "prompt_tokens": 2}
        await resp.write(_event({"id": f"cmpl-{rid}", "choices": [], "usage": usage}))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.in_flight -= 1
        self.ended[rid] = time.monotonic()
        return resp


@pytest.fixture
def fake_server():
    server = FakeServer()
    app = web.Application()
    app.router.add_post("/v1/completions", server.completions)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{port}/v1/completions"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _bodies(n: int, gap: float, tokens: int) -> list[dict]:
    return [{"prompt": [i, gap], "max_tokens": tokens, "stream": True} for i in range(n)]


def test_a_line_is_stamped_with_the_read_that_completed_it():
    reads = [(1.0, b'data: {"a"'), (2.0, b':1}\n\ndata: {"b":2}\n'), (3.0, b"\ndata: [DONE]\n\n")]
    assert [(t, line) for t, line in sse_lines(reads) if line] == [
        (2.0, b'data: {"a":1}'),
        (2.0, b'data: {"b":2}'),
        (3.0, b"data: [DONE]"),
    ]


def test_parse_after_the_stream_gives_token_times_usage_and_errors():
    chunk = {"id": "cmpl-7", "choices": [{"index": 0, "text": ""}]}
    usage = {"id": "cmpl-7", "choices": [], "usage": {"completion_tokens": 3, "prompt_tokens": 5}}
    reads = [(10.5, _event(chunk)), (10.75, _event(chunk) + _event(chunk)[:9]),
             (11.0, _event(chunk)[9:] + _event(usage) + b"data: [DONE]\n\n")]  # fmt: skip
    s = parse(Stream(sent=10.0, ended=11.5, reads=reads))
    assert s.ok and s.response_id == "cmpl-7" and (s.tokens, s.prompt_tokens) == (3, 5)
    assert s.stamps == [10.5, 10.75, 11.0] and s.ttft == 0.5 and s.itls == [0.25, 0.25]
    assert (s.sent, s.ended, s.e2e) == (10.0, 11.5, 1.5)
    failed = parse(
        Stream(sent=1.0, ended=2.0, reads=[(1.5, _event({"error": {"message": "boom"}}))])
    )
    assert not failed.ok and failed.error == "boom" and failed.ended == 2.0


def test_clients_split_over_processes_keep_every_request_once_and_the_client_count():
    bodies = [{"i": i} for i in range(11)]
    shares = split_clients(bodies, clients=5, procs=2)
    assert [s.clients for s in shares] == [3, 2]
    assert [len(s.bodies) for s in shares] == [7, 4]  # clients 0, 2, 4 and 1, 3
    assert sorted(b["i"] for s in shares for b in s.bodies) == list(range(11))
    assert len(split_clients(bodies, clients=3, procs=8)) == 3  # never a process without a client


def test_arrivals_split_over_processes_keep_the_seeded_poisson_sequence():
    rng = random.Random(42)
    gaps = [rng.expovariate(4.0) for _ in range(8)]
    offsets = arrival_offsets(9, 4.0, seed=42)
    assert offsets == pytest.approx([sum(gaps[:i]) for i in range(9)])
    assert arrival_offsets(3, float("inf"), seed=42) == [0.0, 0.0, 0.0]
    bodies = [{"i": i} for i in range(9)]
    merged = sorted((o, b["i"]) for s in split_arrivals(bodies, offsets, 2) for b, o in
                    zip(s.bodies, s.offsets))  # fmt: skip
    assert merged == sorted(zip(offsets, range(9)))


def test_two_client_processes_keep_n_in_flight_and_merge_into_one_load(fake_server):
    server, endpoint = fake_server
    bodies = _bodies(12, gap=0.02, tokens=5)
    with ClientPool(2, endpoint, {}) as pool:
        samples = pool.run(split_clients(bodies, clients=4, procs=2))
    assert server.max_in_flight == 4  # 2 clients in each process, never more, never fewer
    assert len(samples) == 12 and all(s.ok for s in samples)
    assert sorted(s.response_id for s in samples) == sorted(f"cmpl-{i}" for i in range(12))
    for s in samples:
        assert s.tokens == 5 and len(s.stamps) == 5
        assert s.sent < s.stamps[0] and s.stamps == sorted(s.stamps) and s.stamps[-1] <= s.ended
    span = load_span(samples)
    assert span == pytest.approx(
        max(server.ended.values()) - min(server.arrived.values()), abs=0.15
    )
    row = summarize(samples, span, Slo())
    assert row["tok_s"] == pytest.approx(60 / span) and row["req_s"] == pytest.approx(12 / span)


def test_arrival_times_hold_across_processes_and_throughput_spans_them_all(fake_server):
    server, endpoint = fake_server
    # process 0 sends at 0 and 0.05 s, process 1 at 0.5 and 0.55 s: each process is busy for
    # about 0.15 s, the load for about 0.65 s
    offsets = [0.0, 0.5, 0.05, 0.55]
    with ClientPool(2, endpoint, {}) as pool:
        samples = pool.run(split_arrivals(_bodies(4, gap=0.02, tokens=5), offsets, 2))
    assert len(samples) == 4 and all(s.ok for s in samples)
    first = min(server.arrived.values())
    for i, offset in enumerate(offsets):
        assert server.arrived[i] - first == pytest.approx(offset, abs=0.15)
    span = load_span(samples)
    assert span == pytest.approx(max(server.ended.values()) - first, abs=0.15)
    assert span > 0.6
    assert summarize(samples, span, Slo())["tok_s"] == pytest.approx(20 / span)


def test_a_client_process_that_dies_or_fails_fails_the_load_without_hanging(fake_server):
    _, endpoint = fake_server
    with ClientPool(2, endpoint, {}) as pool:
        victim = pool.pids[1]
        threading.Timer(1.0, os.kill, (victim, signal.SIGKILL)).start()
        t0 = time.monotonic()
        with pytest.raises(KilnError, match=f"pid {victim}.* died with exit code -9"):
            pool.run(split_clients(_bodies(4, gap=0.2, tokens=30), clients=4, procs=2))
        assert time.monotonic() - t0 < 5.0  # the other process's 6 s of streams are not awaited
    with ClientPool(1, endpoint, {}) as pool:
        with pytest.raises(KilnError, match="(?s)client process 0 failed:.*TypeError"):
            pool.run([Share([{"prompt": {1, 2}}], clients=1)])  # a set is no JSON
        os.kill(pool.pids[0], signal.SIGKILL)  # between loads
        with pytest.raises(KilnError, match="client process 0 .* died with exit code -9"):
            pool.run(split_clients(_bodies(1, gap=0.01, tokens=2), clients=1, procs=1))
