"""The serving benchmark behind `kiln bench serve`: streaming clients against `kiln serve`.

Each request streams `/v1/completions` with a prompt of `input_len` random token ids (or a line
of a prompts file), greedy, exactly `output_len` tokens (EOS ignored), timed on the client:
TTFT (send -> first token event), ITL (between token events), end to end. Load is a fixed
concurrency (N clients, each sending its next request when the last ends) or a Poisson
request rate (exponential gaps, no client limit). The clients run in worker processes
(`ClientPool`, one per 16 in flight by default): each keeps its share of the N clients busy, or
sends its share of the seeded arrivals at their times, and throughput is every token over first
send -> last end across them all. Beside each concurrency the offline engine runs the same
lengths at batch N (`kiln bench throughput` in a child process, before the server starts, so
the two never share the machine) and the ratio served/offline is reported.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kiln.benchmarking.serve_client import (
    ClientPool,
    Sample,
    Share,
    new_session,
    run_share,
    split_arrivals,
    split_clients,
)
from kiln.benchmarking.stats import ms, percentile
from kiln.errors import KilnError

ROOT = Path(__file__).resolve().parents[2]  # the repository: children run `python -m kiln` here
READY_TIMEOUT_S = 900.0  # a cold compile of a large shape happens before `listening`
COMPLETIONS = "/v1/completions"
CLIENTS_PER_PROC = 16  # streams one client process reads without stamping them in bursts


@dataclass(frozen=True)
class Slo:
    """Goodput counts requests that meet every given bound (None: no bound)."""

    ttft_ms: float | None = None
    itl_ms: float | None = None  # bound on the request's mean inter-token latency
    e2e_ms: float | None = None

    def met(self, s: Sample) -> bool:
        checks = (
            (self.ttft_ms, s.ttft),
            (self.itl_ms, sum(s.itls) / len(s.itls) if s.itls else 0.0),
            (self.e2e_ms, s.e2e),
        )
        return all(bound is None or (v is not None and v * 1000 <= bound) for bound, v in checks)


def load_prompts(
    path: Path | None, n: int, input_len: int, vocab_size: int, seed: int
) -> list[str | list[int]]:
    """`n` prompts: random token ids, or lines of `path` (text, or JSON lists of ids) cycled."""
    if path is None:
        from kiln.benchmarking.workload import random_prompts

        return random_prompts(n, input_len, vocab_size, seed)
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise KilnError(f"cannot read --prompts-file {path}: {e.strerror or e}") from None
    if not lines:
        raise KilnError(f"--prompts-file {path} holds no prompts (one per line)")
    parsed = [json.loads(ln) if ln.lstrip().startswith("[") else ln for ln in lines]
    return [parsed[i % len(parsed)] for i in range(n)]


def request_body(model: str, prompt: str | list[int], output_len: int) -> dict:
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": output_len,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def run_concurrency(url: str, bodies: list[dict], concurrency: int, headers: dict):
    """N clients in this process, each sending the next request when its last one ends
    (`benchmarks/serve_profile.py`; the bench spreads its clients over a `ClientPool`)."""
    share = Share(bodies, clients=concurrency)
    samples = await run_share(url + COMPLETIONS, headers, share, time.monotonic())
    return samples, load_span(samples)


def arrival_offsets(n: int, rate: float, seed: int) -> list[float]:
    """Send times (s after the start) of `n` requests arriving as a Poisson process of `rate`
    per second (inf: all at once); the same seed gives the same times."""
    rng, t, offsets = random.Random(seed), 0.0, []
    for _ in range(n):
        offsets.append(t)
        if rate != float("inf"):
            t += rng.expovariate(rate)
    return offsets


def load_span(samples: list[Sample]) -> float:
    """First send -> last end over every request of a load, whichever process sent it."""
    return max(s.ended for s in samples) - min(s.sent for s in samples)


def default_client_procs(in_flight: int) -> int:
    """One client process per CLIENTS_PER_PROC requests in flight, leaving a core to the
    server (on a 2-core host: 1)."""
    cores = os.cpu_count() or 2
    return max(1, min(math.ceil(in_flight / CLIENTS_PER_PROC), cores - 1))


def summarize(samples: list[Sample], wall: float, slo: Slo) -> dict:
    good = [s for s in samples if s.ok]
    ttft = [s.ttft for s in good if s.ttft is not None]
    itl = [x for s in good for x in s.itls]
    e2e = [s.e2e for s in good]
    row = {
        "requests": len(samples),
        "errors": len(samples) - len(good),
        "req_s": len(good) / wall,
        "tok_s": sum(s.tokens for s in good) / wall,
        "goodput_req_s": sum(slo.met(s) for s in good) / wall,
    }
    for name, values in (("ttft", ttft), ("itl", itl), ("e2e", e2e)):
        for q in (50, 90, 99):
            row[f"{name}_p{q}_ms"] = ms(percentile(values, q))
    row["first_errors"] = sorted({s.error for s in samples if not s.ok})[:3]
    return row


def offline_rows(
    model: str, batches: list[int], input_len: int, output_len: int, argv: list[str]
) -> dict[int, dict]:
    """`kiln bench throughput` at these batch sizes in one child process; batch -> kiln row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "offline.json"
        cmd = [sys.executable, "-m", "kiln", "bench", "throughput", model,
               "--batch-sizes", ",".join(map(str, batches)), "--input-len", str(input_len),
               "--output-len", str(output_len), "--json-out", str(out),
               "--db", str(Path(tmp) / "db.sqlite"), *argv]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_offline_env())
        if done.returncode != 0:
            raise KilnError(f"the offline bench failed:\n{done.stderr[-2000:]}")
        rows = json.loads(out.read_text())["results"]
    return {r["batch_size"]: r for r in rows if r["engine"] == "kiln"}


def _offline_env() -> dict[str, str]:
    """The offline child runs as many intra-op threads as `kiln serve`'s engine core (all
    cores but one, which the server keeps), unless OMP_NUM_THREADS says otherwise: on a
    2-core host two threads against the load generator cost the offline run 5-10x."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) - 1)))
    return env


def start_server(
    model: str, argv: list[str], max_queue: int, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """`kiln serve MODEL` on a free loopback port (in `env`, default ours); returns once it
    listens."""
    cmd = [sys.executable, "-m", "kiln", "serve", model, "--port", "0",
           "--max-queue", str(max_queue), "--log-level", "warning", *argv]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + READY_TIMEOUT_S
    for line in proc.stdout:
        if "listening on http://" in line:
            return proc, line.rsplit(" ", 1)[-1].strip()
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise KilnError(f"kiln serve exited with {proc.wait()} before it was ready")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass(frozen=True)
class ServeBench:
    """One `kiln bench serve` invocation: what to load and with what."""

    model: str  # checkpoint folder or 'demo': vocabulary, offline bench, self-started server
    url: str | None  # a running server; None: start `kiln serve model`
    loads: tuple[tuple[str, float], ...]  # ("concurrency", n) or ("rate", req/s)
    input_len: int
    output_len: int
    num_prompts: int | None
    prompts_file: Path | None
    slo: Slo
    offline: bool
    seed: int = 0
    api_key: str | None = None
    served_name: str | None = None
    client_procs: int | None = None  # None: default_client_procs of each load
    api_servers: int = 1  # the self-started server's `--api-servers`

    def __post_init__(self) -> None:
        for name in ("input_len", "output_len"):
            if getattr(self, name) < 1:
                raise KilnError(f"--{name.replace('_', '-')}={getattr(self, name)} must be >= 1")
        for name in ("num_prompts", "client_procs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise KilnError(f"{flag}={getattr(self, name)} must be >= 1 (or left out)")
        if self.api_servers < 1 or (self.url and self.api_servers != 1):
            raise KilnError(f"--api-servers={self.api_servers}: must be >= 1, and is for a "
                            "server `kiln bench serve` starts (not with --url)")  # fmt: skip
        bad = [v for _, v in self.loads if not v > 0]
        if not self.loads or bad:
            raise KilnError(f"--concurrency / --request-rate values {bad} must be > 0")


def parse_loads(concurrency: str, rates: str | None) -> tuple[tuple[str, float], ...]:
    """'32,128' -> concurrency loads; a rate list ('1,4,inf') replaces them."""
    kind, text = ("rate", rates) if rates else ("concurrency", concurrency)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise KilnError(
            f"{text!r} must be comma-separated numbers, like 32,128 or 2,8,inf"
        ) from None
    if kind == "concurrency" and any(v != int(v) or v == float("inf") for v in values):
        raise KilnError(f"--concurrency {text!r} must list whole numbers, like 32,128")
    return tuple((kind, v) for v in values)


def run_bench(cfg: ServeBench, engine_argv: list[str], vocab_size: int) -> tuple[list[dict], int]:
    """Offline rows first (nothing else running), then the server and every load; returns
    the rows and the number of failed requests."""
    batches = sorted({int(n) for kind, n in cfg.loads if kind == "concurrency"})
    offline = {}
    if cfg.offline and batches:
        offline = offline_rows(cfg.model, batches, cfg.input_len, cfg.output_len, engine_argv)
    biggest = max(cfg.num_prompts or 0, *(4 * int(n) for k, n in cfg.loads if k == "concurrency"))
    serve_argv = [*engine_argv, "--api-servers", str(cfg.api_servers)]
    proc, url = (
        (None, cfg.url.rstrip("/"))
        if cfg.url
        else start_server(cfg.model, serve_argv, max(1024, 2 * biggest))
    )
    try:
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        model = cfg.served_name or asyncio.run(_first_model(url, headers))
        procs = max(_client_procs(cfg, kind, value) for kind, value in cfg.loads)
        with ClientPool(procs, url + COMPLETIONS, headers) as pool:
            return _run_loads(cfg, pool, model, vocab_size, offline)
    finally:
        if proc is not None:
            stop_server(proc)


def _run_loads(cfg: ServeBench, pool: ClientPool, model: str, vocab_size: int, offline: dict):
    # every client process sends a warm-up request (its first one pays aiohttp's and the
    # JSON decoder's start-up)
    n = max(8, len(pool))
    warm = load_prompts(cfg.prompts_file, n, cfg.input_len, vocab_size, cfg.seed + 7919)
    pool.run(split_clients([request_body(model, p, 4) for p in warm], n, len(pool)))
    rows, errors = [], 0
    for i, (kind, value) in enumerate(cfg.loads):
        n = _num_requests(cfg, kind, value)
        prompts = load_prompts(cfg.prompts_file, n, cfg.input_len, vocab_size, cfg.seed + i)
        bodies = [request_body(model, p, cfg.output_len) for p in prompts]
        procs = _client_procs(cfg, kind, value)
        if kind == "concurrency":
            shares = split_clients(bodies, int(value), procs)
        else:
            shares = split_arrivals(bodies, arrival_offsets(n, value, cfg.seed + i), procs)
        print(f"{_load_label(kind, value)}: {len(shares)} client process(es)", file=sys.stderr)
        samples = pool.run(shares)
        summary = summarize(samples, load_span(samples), cfg.slo)
        errors += summary["errors"]
        rows += _rows(cfg, kind, value, summary, offline)
    return rows, errors


def _num_requests(cfg: ServeBench, kind: str, value: float) -> int:
    return cfg.num_prompts or (4 * int(value) if kind == "concurrency" else 200)


def _client_procs(cfg: ServeBench, kind: str, value: float) -> int:
    """--client-procs, or the default for the most requests the load can have in flight."""
    n = _num_requests(cfg, kind, value)
    in_flight = min(int(value), n) if kind == "concurrency" else n
    return min(cfg.client_procs, in_flight) if cfg.client_procs else default_client_procs(in_flight)


def _load_label(kind: str, value: float) -> str:
    return f"{int(value)} clients" if kind == "concurrency" else f"{value:g} req/s"


async def _first_model(url: str, headers: dict) -> str:
    async with new_session(headers) as session, session.get(url + "/v1/models") as resp:
        if resp.status != 200:
            raise KilnError(f"{url}/v1/models answered {resp.status}: {(await resp.text())[:200]}")
        return (await resp.json())["data"][0]["id"]


def _rows(cfg: ServeBench, kind: str, value: float, s: dict, offline: dict) -> list[dict]:
    batch = int(value) if kind == "concurrency" else s["requests"]
    served = {
        "engine": "kiln-serve",
        "batch_size": batch,
        "input_len": cfg.input_len,
        "output_len": cfg.output_len,
        **{k: v for k, v in s.items() if k not in ("requests", "errors", "first_errors")},
        "request_rate": None if kind == "concurrency" else value,
        "peak_memory_gb": None,
        "api_servers": None if cfg.url else cfg.api_servers,  # a running server's: unknown
    }
    if s["errors"]:
        print(f"{s['errors']} of {s['requests']} requests failed: {s['first_errors']}",
              file=sys.stderr)  # fmt: skip
    if s["itl_p50_ms"]:
        served["itl_p99_over_p50"] = s["itl_p99_ms"] / s["itl_p50_ms"]
    base = offline.get(batch) if kind == "concurrency" else None
    if base is None:
        return [served]
    served["served_ratio"] = served["tok_s"] / base["tok_s"]
    if s["ttft_p50_ms"] and base.get("ttft_p50_ms"):
        served["ttft_p50_over_offline"] = s["ttft_p50_ms"] / base["ttft_p50_ms"]
    return [{**base, "engine": "kiln-offline"}, served]
