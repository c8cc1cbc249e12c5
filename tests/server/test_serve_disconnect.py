"""End to end: clients that drop their streams mid-way free their sequences and KV blocks."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import pytest

from tests.server.conftest import API_KEY
from tests.server.harness import metrics, wait_for_metrics

pytestmark = pytest.mark.timeout(300)
STREAMS = 200
IDLE_KEYS = ("kiln_num_requests_running", "kiln_num_requests_waiting", "kiln_kv_cache_blocks_used")


async def open_and_drop(
    session: aiohttp.ClientSession, url: str, seed: int, events_before_drop: int
) -> int:
    """Start a long stream, read a few token events, then close the connection."""
    rng = random.Random(seed)
    body = {
        "model": "demo",
        "prompt": [rng.randrange(5, 500) for _ in range(rng.randint(4, 40))],
        "max_tokens": 400,
        "ignore_eos": True,
        "temperature": 1.0,
        "seed": seed,
        "stream": True,
    }
    resp = await session.post(
        url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert resp.status == 200, await resp.text()
    seen = 0
    async for line in resp.content:
        if line.startswith(b"data: {"):
            assert json.loads(line[6:])["choices"][0]["finish_reason"] is None
            seen += 1
            if seen >= events_before_drop:
                break
    resp.close()  # drops the connection mid-stream
    return seen


async def drop_many(url: str) -> list[int]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await asyncio.gather(
            *(open_and_drop(session, url, 1000 + i, 1 + i % 3) for i in range(STREAMS))
        )


def test_dropped_streams_free_sequences_and_kv_blocks(served):
    before = metrics(served.url)
    assert all(before[k] == 0 for k in IDLE_KEYS), before  # nothing else in flight
    seen = asyncio.run(drop_many(served.url))
    assert all(s >= 1 for s in seen)
    aborted = 'kiln_request_finished_total{finish_reason="abort"}'
    # (with several API servers, another one's counters reach /metrics up to 0.25 s late)
    after = wait_for_metrics(served.url, lambda m: all(m[k] == 0 for k in IDLE_KEYS)
                             and m.get(aborted, 0) - before.get(aborted, 0) >= STREAMS)  # fmt: skip
    assert {k: after[k] for k in IDLE_KEYS} == {k: 0 for k in IDLE_KEYS}
    assert after["kiln_kv_cache_usage_ratio"] == 0
    # none of them ran to its 400 tokens: all were aborted
    finished = 'kiln_request_finished_total{finish_reason="length"}'
    assert after.get(finished, 0) - before.get(finished, 0) == 0
    assert after[aborted] - before.get(aborted, 0) == STREAMS
    assert (
        after["kiln_generation_tokens_total"] - before["kiln_generation_tokens_total"]
        < STREAMS * 400 / 4
    )
