"""Request parsing, metric rendering and config validation (pure functions, no server)."""

from __future__ import annotations

import random

import pytest

from kiln.errors import KilnError
from server.chat import parse_messages
from server.completions import parse_prompts
from server.config import ServerConfig
from server.errors import APIError
from server.metrics import Histogram, ServerMetrics, parse_metrics
from server.protocol import Body, sampling_params, seeded


def test_prompt_forms():
    ids = [random.randrange(1, 1000) for _ in range(5)]
    assert parse_prompts("hi") == ["hi"]
    assert parse_prompts(["a", "b"]) == ["a", "b"]
    assert parse_prompts(ids) == [ids]
    assert parse_prompts([ids, ids[:2]]) == [ids, ids[:2]]
    for bad in ([], [[]], [1, "a"], [True, 2], 5, None, [[1], "a"]):
        with pytest.raises(APIError) as err:
            parse_prompts(bad)
        assert err.value.status == 400 and err.value.param == "prompt"


def test_body_types_and_ranges():
    body = Body({"n": True, "t": 3, "s": 7, "x": None})
    with pytest.raises(APIError, match="integer"):
        body.int("n", 1)  # a bool is not an int here
    with pytest.raises(APIError, match="between 0 and 2"):
        body.float("t", 1.0, 0, 2)
    assert body.int("x", 9) == 9  # null means default
    with pytest.raises(APIError) as err:
        Body({"stop": ["", "a"]}).stop()
    assert err.value.param == "stop"


def test_sampling_params_and_seeds():
    p = sampling_params(
        Body({"temperature": 0.5, "seed": 11, "stop": "END", "top_k": -1}),
        max_tokens=None,
        logprobs=2,
        default_max_tokens=16,
    )
    assert (p.max_tokens, p.temperature, p.stop, p.top_k, p.logprobs) == (16, 0.5, ("END",), 0, 2)
    assert [q.seed for q in seeded(p, 3)] == [11, 12, 13]
    with pytest.raises(APIError) as err:  # SamplingParams' own check, with its field as param
        sampling_params(Body({"top_p": 0}), max_tokens=1, logprobs=None, default_max_tokens=1)
    assert err.value.param == "top_p"


def test_messages():
    msgs = parse_messages(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": None},
        ]
    )
    assert msgs == [{"role": "user", "content": "ab"}, {"role": "assistant", "content": ""}]
    for bad in ([], [{"role": "wizard", "content": "x"}], [{"role": "user", "content": 3}]):
        with pytest.raises(APIError):
            parse_messages(bad)


def test_histogram_is_cumulative_and_round_trips():
    rng = random.Random(3)
    values = [rng.uniform(0.0005, 20) for _ in range(200)]
    h = Histogram("h", "test")
    for v in values:
        h.observe(v)
    parsed = parse_metrics("\n".join(h.render()))
    assert parsed['h_bucket{le="+Inf"}'] == 200 == parsed["h_count"]
    assert parsed['h_bucket{le="1.0"}'] == sum(v <= 1.0 for v in values)
    assert parsed["h_sum"] == pytest.approx(sum(values))


def test_metrics_text_has_engine_gauges():
    m = ServerMetrics()
    m.requests.inc("/v1/completions", "200")
    text = m.render({"num_running": 3, "kv_usage": 0.25})
    parsed = parse_metrics(text)
    assert parsed["kiln_num_requests_running"] == 3
    assert parsed["kiln_kv_cache_usage_ratio"] == 0.25
    assert parsed['kiln_http_requests_total{route="/v1/completions",status="200"}'] == 1
    assert "# TYPE kiln_time_to_first_token_seconds histogram" in text


def test_config_names_the_bad_field():
    with pytest.raises(KilnError, match="max_queue"):
        ServerConfig(max_queue=0)
    assert ServerConfig(served_model_names=["a"]).served_model_names == ("a",)


def test_held_sse_events_go_out_in_one_write_in_order():
    import asyncio

    from server import sse

    class Resp(dict):
        def __init__(self):
            super().__init__()
            self.writes: list[bytes] = []

        async def write(self, data: bytes) -> None:
            self.writes.append(data)

        async def write_eof(self) -> None:
            self.writes.append(b"<eof>")

    async def run(resp):
        await sse.send_event(resp, {"n": 1}, flush=False)
        await sse.send_event(resp, {"n": 2}, flush=False)
        await sse.send_event(resp, {"n": 3})
        await sse.send_event(resp, {"n": 4}, flush=False)
        await sse.send_done(resp)

    resp = Resp()
    asyncio.run(run(resp))
    assert resp.writes == [
        b'data: {"n":1}\n\ndata: {"n":2}\n\ndata: {"n":3}\n\n',
        b'data: {"n":4}\n\n',
        b"data: [DONE]\n\n",
        b"<eof>",
    ]
