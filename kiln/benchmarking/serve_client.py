"""The streaming client of the serving benchmarks: one OpenAI-style request over SSE, timed
chunk by chunk (time to first token, inter-token latencies, end-to-end).

Timing follows `vllm bench serve`: every chunk that carries a choice is a token event, text or
not (the server sends one chunk per engine step per choice, and a step whose tokens complete
no character yet sends `text: ""`); TTFT is send -> first such chunk, ITL the gaps between
them. The chat role chunk is not a token event (the server sends it just before the choice's
first token chunk, which is).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import aiohttp

WORDS = "the model engine kiln token text write code python data test world house".split()


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
    t0 = time.monotonic()
    sample = Sample(ok=False, sent=t0)
    try:
        async with session.post(url + path, json=body) as resp:
            if resp.status != 200:
                return Sample(ok=False, error=f"HTTP {resp.status}: {(await resp.text())[:200]}")
            async for line in resp.content:
                if not line.startswith(b"data: {"):
                    continue
                now = time.monotonic()
                event = json.loads(line[6:])
                if "error" in event:
                    return Sample(ok=False, error=event["error"]["message"])
                if event.get("usage"):
                    sample.tokens = event["usage"]["completion_tokens"]
                    sample.prompt_tokens = event["usage"]["prompt_tokens"]
                if is_token_chunk(event):
                    sample.response_id = event.get("id", "")
                    sample.stamps.append(now)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return Sample(ok=False, error=f"{type(e).__name__}: {e}")
    sample.ok, sample.e2e = True, time.monotonic() - t0
    if sample.stamps:
        sample.ttft = sample.stamps[0] - t0
        sample.itls = [b - a for a, b in zip(sample.stamps, sample.stamps[1:])]
    return sample


def is_token_chunk(event: dict) -> bool:
    """A chunk with a choice, empty text included, except the chat role chunk."""
    choices = event.get("choices") or ()
    return any("role" not in (c.get("delta") or {}) for c in choices)
