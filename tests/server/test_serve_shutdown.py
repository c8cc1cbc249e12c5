"""End to end: a full queue answers 503, and SIGTERM drains, aborts, and exits 0."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import aiohttp
import pytest

from tests.server.harness import ServeProcess, engine_core_pid, request

pytestmark = pytest.mark.timeout(300)
SHUTDOWN_TIMEOUT_S = 3.0
MAX_QUEUE = 4


@pytest.fixture(scope="module")
def small_server():
    proc = ServeProcess(
        "--max-queue", str(MAX_QUEUE), "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)
    ).start()
    yield proc
    proc.kill()


async def stream(
    session, url: str, max_tokens: int, started: asyncio.Event | None, seed: int
) -> tuple[str | None, int]:
    """Stream a completion; returns (final finish_reason or None if cut, token events)."""
    body = {
        "prompt": [seed % 400 + 5, 17, 42],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "seed": seed,
    }
    finish, events = None, 0
    try:
        async with session.post(url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            async for line in resp.content:
                if not line.startswith(b"data: {"):
                    continue
                events += 1
                if started is not None:
                    started.set()
                finish = json.loads(line[6:])["choices"][0]["finish_reason"] or finish
    except aiohttp.ClientError:
        pass  # the server closed the connection
    return finish, events


async def load_then_sigterm(proc: ServeProcess) -> dict:
    url = proc.url
    async with aiohttp.ClientSession() as session:
        starts = [asyncio.Event() for _ in range(MAX_QUEUE)]
        # two short requests that can finish inside the grace period, two that cannot
        lengths = [12, 12, 1900, 1900]
        tasks = [
            asyncio.create_task(stream(session, url, n, ev, i))
            for i, (n, ev) in enumerate(zip(lengths, starts, strict=True))
        ]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in starts)), 120)
        status, headers, body = await asyncio.to_thread(
            request, url, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 2}
        )
        core = engine_core_pid(proc.proc.pid)
        t0 = time.monotonic()
        code = await asyncio.to_thread(proc.terminate, SHUTDOWN_TIMEOUT_S + 30)
        results = await asyncio.gather(*tasks)
    return {
        "status": status,
        "headers": headers,
        "body": json.loads(body),
        "code": code,
        "elapsed": time.monotonic() - t0,
        "results": results,
        "core_left": Path(f"/proc/{core}").exists(),
    }


def test_full_queue_503_then_sigterm_drains_and_exits_zero(small_server):
    out = asyncio.run(load_then_sigterm(small_server))
    assert out["status"] == 503
    assert out["headers"]["retry-after"] == "1"
    assert out["body"]["error"]["code"] == "queue_full"
    assert out["code"] == 0
    assert not out["core_left"]  # the engine-core process stopped with the server
    assert out["elapsed"] < SHUTDOWN_TIMEOUT_S + 15  # interpreter exit included
    short, long_ = out["results"][:2], out["results"][2:]
    assert all(reason == "length" for reason, _ in short)  # finished within the grace period
    assert all(reason in ("abort", None) and n < 1900 for reason, n in long_)
    stderr = small_server.stderr_text()
    assert "Traceback" not in stderr, stderr
    # one line per API server that had some left (KILN_TEST_API_SERVERS)
    aborted = re.findall(r"shutdown timeout: aborting (\d+) requests", stderr)
    assert sum(map(int, aborted)) == 2, stderr
