"""In-process tests of the engine loop and handlers against a fake engine (no model load)."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kiln.errors import KilnError
from runtime.sampling_params import SamplingParams
from server.app import create_app
from server.config import ServerConfig
from server.engine_loop import EngineLoop
from server.metrics import ServerMetrics
from tests.server.fake_engine import FakeEngine

pytestmark = pytest.mark.timeout(60)


async def with_client(engine: FakeEngine, body, config: ServerConfig | None = None):
    async with TestClient(TestServer(create_app(engine, config))) as client:
        return await body(client)


def test_engine_calls_all_happen_on_one_engine_thread():
    engine = FakeEngine()

    async def body(client):
        resp = await client.post(
            "/v1/completions", json={"prompt": "hey", "max_tokens": 5, "n": 3, "seed": 4}
        )
        return resp.status, await resp.json()

    status, data = asyncio.run(with_client(engine, body))
    assert status == 200
    # n=3 with seed 4: choice i used seed 4+i, so it starts at letter 4+i
    assert [c["text"] for c in data["choices"]] == ["efghi", "fghij", "ghijk"]
    assert len(engine.threads) == 1 and threading.get_ident() not in engine.threads


def test_step_failure_is_500_then_the_server_recovers():
    engine = FakeEngine(fail_step_at=2)

    async def body(client):
        bad = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 4})
        engine.fail_step_at = None
        good = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        return bad.status, await bad.json(), good.status

    status, err, good = asyncio.run(with_client(engine, body))
    assert status == 500 and err["error"]["code"] == "internal_error"
    assert good == 200


def test_step_failure_mid_stream_is_reported_in_band():
    engine = FakeEngine(fail_step_at=3)

    async def body(client):
        resp = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "q"}], "max_tokens": 8, "stream": True},
        )
        return resp.status, (await resp.read()).decode()

    status, text = asyncio.run(with_client(engine, body))
    events = [e[6:] for e in text.split("\n\n") if e.startswith("data: ")]
    assert status == 200 and events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "server_error"


def test_rejected_choice_aborts_the_choices_already_added():
    engine = FakeEngine()

    async def run():
        loop = EngineLoop(engine, ServerMetrics(), max_queue=8)
        await loop.start()
        params = SamplingParams(max_tokens=30)
        with pytest.raises(KilnError):
            await loop.submit("r", ["ok", "x" * 40], [params, params])  # 2nd overflows
        active = loop.num_active
        await loop.stop()
        return active

    assert asyncio.run(run()) == 0
    assert engine.aborted == ["r-0"] and not engine.requests


def test_stop_ends_open_streams_with_abort():
    engine = FakeEngine(step_delay=0.01)

    async def run():
        loop = EngineLoop(engine, ServerMetrics(), max_queue=8)
        await loop.start()
        group = await loop.submit("s", [[1, 2, 3]], [SamplingParams(max_tokens=60)])
        reasons = []
        async for _, out in group.outputs():
            if not reasons:
                await loop.stop()  # shutdown while the request is mid-way
            reasons.append(out.finish_reason)
        return reasons

    reasons = asyncio.run(run())
    assert reasons[-1] == "abort" and len(reasons) < 60


def test_queue_limit_counts_every_choice():
    engine = FakeEngine()

    async def body(client):
        resp = await client.post("/v1/completions", json={"prompt": "x", "n": 3})
        return resp.status, resp.headers.get("Retry-After"), await resp.json()

    config = ServerConfig(max_queue=2, retry_after_s=3)
    status, retry, data = asyncio.run(with_client(engine, body, config))
    assert status == 503 and retry == "3" and data["error"]["code"] == "queue_full"


def test_served_model_names_replace_the_engine_name():
    async def body(client):
        models = await (await client.get("/v1/models")).json()
        old = await client.post("/v1/completions", json={"model": "fake", "prompt": "x"})
        new = await client.post(
            "/v1/completions", json={"model": "b", "prompt": "x", "max_tokens": 1}
        )
        return [m["id"] for m in models["data"]], old.status, new.status

    config = ServerConfig(served_model_names=("a", "b"))
    assert asyncio.run(with_client(FakeEngine(), body, config)) == (["a", "b"], 400, 200)


class HalfTextEngine(FakeEngine):
    """Every other token completes no text: its text comes with the next token (as with the
    first byte of a two-byte UTF-8 character)."""

    def _advance(self, rid):
        out = super()._advance(rid)
        n = len(out.token_ids)
        if n % 2 and not out.finished:
            return replace(out, new_text="", text=out.text[:-1])
        return replace(out, new_text=out.text[-2:] if n % 2 == 0 else out.new_text)


def _chunks(raw: str) -> list[dict]:
    lines = [ln[6:] for ln in raw.split("\n\n") if ln.startswith("data: {")]
    return [json.loads(ln) for ln in lines]


def test_a_step_whose_tokens_complete_no_text_still_streams_its_chunk():
    async def body(client):
        got = []
        for path, extra in (
            ("/v1/completions", {"prompt": "hey"}),
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hey"}]}),
        ):
            resp = await client.post(path, json={**extra, "max_tokens": 5, "stream": True})
            got.append(_chunks(await resp.text()))
        return got

    completion, chat = asyncio.run(with_client(HalfTextEngine(), body))
    texts = [c["choices"][0]["text"] for c in completion]
    assert texts == ["", "ab", "", "cd", "e"]  # one chunk per step, text or not
    assert chat[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chat[1:]]  # after the role chunk
    assert [d["content"] for d in deltas] == ["", "ab", "", "cd", "e"]
    assert chat[-1]["choices"][0]["finish_reason"] == "length"


def test_the_chat_role_chunk_waits_for_the_first_token():
    """Sent at admission, a role chunk would be what a chunk-timing client calls the first
    token (vLLM's bench does); it must come with the token instead."""
    engine = FakeEngine(step_delay=0.3)

    async def body(client):
        t0 = asyncio.get_running_loop().time()
        resp = await client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True},
        )
        first = await resp.content.readline()
        return asyncio.get_running_loop().time() - t0, first, await resp.text()

    waited, first, _ = asyncio.run(with_client(engine, body))
    assert b'"role":"assistant"' in first and waited >= 0.25  # one 0.3 s step came first
