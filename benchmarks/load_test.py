"""Bounded loopback load test of `kiln serve`: C concurrent streaming clients, R requests each.

    python benchmarks/load_test.py                       # starts `kiln serve demo` itself
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --clients 64 --requests 20

Every request streams a chat or completion (alternating) and is timed on the client: TTFT
(send -> first token event), ITL (between token events), end to end. It prints a table, writes
a JSON bench record (`--json`, the perf_dashboard format) and exits 1 if any request failed or
the time bound (`--time-limit`) ran out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python benchmarks/load_test.py`
    sys.path.insert(0, str(ROOT))

from kiln.benchmarking.serve_client import Sample, build_body, one_request  # noqa: E402
from kiln.benchmarking.stats import percentile  # noqa: E402


async def client_loop(session, url: str, args, cid: int, deadline: float) -> list[Sample]:
    rng = random.Random(args.seed * 1000 + cid)
    samples = []
    for i in range(args.requests):
        if time.monotonic() > deadline:
            samples.append(Sample(ok=False, error="time limit reached"))
            break
        path, body = build_body(rng, cid + i, args.max_tokens, args.model)
        samples.append(await one_request(session, url, path, body))
    return samples


async def run_load(url: str, args) -> tuple[list[Sample], float]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    timeout = aiohttp.ClientTimeout(total=args.time_limit)
    connector = aiohttp.TCPConnector(limit=0)
    deadline = time.monotonic() + args.time_limit
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=connector
    ) as session:
        t0 = time.perf_counter()
        per_client = await asyncio.gather(
            *(client_loop(session, url, args, c, deadline) for c in range(args.clients))
        )
        wall = time.perf_counter() - t0
    return [s for samples in per_client for s in samples], wall


def summarize(samples: list[Sample], wall: float, args) -> dict:
    good = [s for s in samples if s.ok]
    ttfts = [s.ttft for s in good if s.ttft is not None]
    itls = [x for s in good for x in s.itls]
    tokens = sum(s.tokens for s in good)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 3)

    return {
        "clients": args.clients,
        "requests": len(samples),
        "ok": len(good),
        "errors": len(samples) - len(good),
        "wall_s": round(wall, 3),
        "req_s": round(len(good) / wall, 3),
        "tok_s": round(tokens / wall, 2),
        "output_tokens": tokens,
        "mean_prompt_tokens": round(sum(s.prompt_tokens for s in good) / max(1, len(good))),
        "ttft_p50_ms": ms(percentile(ttfts, 50)),
        "ttft_p99_ms": ms(percentile(ttfts, 99)),
        "itl_p50_ms": ms(percentile(itls, 50)),
        "itl_p99_ms": ms(percentile(itls, 99)),
        "e2e_p50_ms": ms(percentile([s.e2e for s in good], 50)),
        "first_errors": sorted({s.error for s in samples if not s.ok})[:5],
    }


def bench_record(summary: dict, args) -> dict:
    """The perf_dashboard `BenchRecord` JSON shape (kind/schema/bench/model/card/results)."""
    row = {
        "engine": "kiln-serve",
        "batch_size": args.clients,
        "input_len": summary["mean_prompt_tokens"],
        "output_len": args.max_tokens,
        "tok_s": summary["tok_s"],
        **{k: summary[k] for k in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")},
        "peak_memory_gb": None,
    }
    return {
        "kind": "bench",
        "schema": 1,
        "bench": "serve_load",
        "model": args.model,
        "card": args.card,
        "results": [row],
        "startup": {},
        "host": socket.gethostname(),
        "created": time.time(),
    }


def print_table(summary: dict) -> None:
    for key, value in summary.items():
        print(f"{key:>14}  {value}")


def start_server(args) -> tuple[subprocess.Popen, str]:
    """`kiln serve` on a free loopback port; returns once it prints its URL."""
    cmd = [
        sys.executable,
        "-m",
        "kiln",
        "serve",
        args.serve_model,
        "--port",
        "0",
        "--max-queue",
        str(max(1024, args.clients * 2)),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "listening on http://" in line:
            return proc, line.rsplit(" ", 1)[-1].strip()
    raise SystemExit(f"kiln serve exited with {proc.wait()} before it was ready")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running server; default: start `kiln serve` here")
    p.add_argument("--serve-model", default="demo", help="model to serve when starting one")
    p.add_argument("--model", default="demo", help="the `model` field to send")
    p.add_argument("--api-key", default=None)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=20, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds for the whole run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--card", default="cpu", help="the card name to record (e.g. 'NVIDIA H200')")
    p.add_argument("--json", type=Path, default=None, help="write the bench record here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    proc, url = (None, args.url.rstrip("/")) if args.url else start_server(args)
    try:
        samples, wall = asyncio.run(run_load(url, args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    summary = summarize(samples, wall, args)
    print_table(summary)
    if args.json is not None:
        args.json.write_text(json.dumps(bench_record(summary, args), indent=2) + "\n")
    return 1 if summary["errors"] or summary["ok"] < args.clients * args.requests else 0


if __name__ == "__main__":
    sys.exit(main())
