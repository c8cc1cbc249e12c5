"""The streaming client of the serving benchmarks: one OpenAI-style request over SSE, timed
token by token (time to first token, inter-token latencies, end-to-end)."""

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
    t0 = time.perf_counter()
    last, sample = None, Sample(ok=False)
    try:
        async with session.post(url + path, json=body) as resp:
            if resp.status != 200:
                return Sample(ok=False, error=f"HTTP {resp.status}: {(await resp.text())[:200]}")
            async for line in resp.content:
                if not line.startswith(b"data: {"):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return Sample(ok=False, error=event["error"]["message"])
                if event.get("usage"):
                    sample.tokens = event["usage"]["completion_tokens"]
                    sample.prompt_tokens = event["usage"]["prompt_tokens"]
                if not _has_token(event):
                    continue
                now = time.perf_counter()
                if last is None:
                    sample.ttft = now - t0
                else:
                    sample.itls.append(now - last)
                last = now
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return Sample(ok=False, error=f"{type(e).__name__}: {e}")
    sample.ok, sample.e2e = True, time.perf_counter() - t0
    return sample


def _has_token(event: dict) -> bool:
    for c in event.get("choices", ()):
        if c.get("text") or (c.get("delta") or {}).get("content") or c.get("logprobs"):
            return True
    return False
