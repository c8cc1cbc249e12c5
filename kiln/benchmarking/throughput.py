"""Throughput and latency of the Kiln engine: submit a batch, step until done, time each token.

Timestamps are taken right after every `Engine.step()` (after a CUDA sync on GPU), on the same
monotonic clock as `RequestOutput.metrics["arrival"]`, so TTFT = first token's step end - arrival
and ITL = gaps between one request's successive tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kiln.benchmarking.stats import ms, percentile
from kiln.benchmarking.workload import Workload
from kiln.errors import KilnError


@dataclass
class BatchTimings:
    """Token timestamps of one batch run: per request, arrival and one stamp per token."""

    start: float
    end: float = 0.0
    arrival: dict[str, float] = field(default_factory=dict)
    stamps: dict[str, list[float]] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.stamps.values())

    def ttfts(self) -> list[float]:
        return [s[0] - self.arrival[rid] for rid, s in self.stamps.items() if s]

    def itls(self) -> list[float]:
        return [b - a for s in self.stamps.values() for a, b in zip(s, s[1:], strict=False)]


def latency_row(
    engine: str, batch_size: int, workload: Workload, t: BatchTimings, peak_memory_gb: float | None
) -> dict:
    """One `BenchRecord.results` row from a batch's timestamps (latencies in ms)."""
    ttft, itl = t.ttfts(), t.itls()
    return {
        "engine": engine, "batch_size": batch_size, "input_len": workload.input_len,
        "output_len": workload.output_len, "tok_s": t.num_tokens / (t.end - t.start),
        "ttft_p50_ms": ms(percentile(ttft, 50)), "ttft_p99_ms": ms(percentile(ttft, 99)),
        "itl_p50_ms": ms(percentile(itl, 50)), "itl_p99_ms": ms(percentile(itl, 99)),
        "peak_memory_gb": peak_memory_gb,
    }  # fmt: skip


def device_sync(device) -> Callable[[], None]:
    """A function that waits for queued GPU work (a no-op on CPU), so wall time is honest."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def run_batch(
    engine, prompts: list[list[int]], output_len: int, tag: str, sync: Callable[[], None]
) -> BatchTimings:
    """Submit every prompt at once, step until all finish, stamp each token as it arrives."""
    from runtime.sampling_params import SamplingParams

    if engine.has_unfinished():
        raise KilnError("the engine has unfinished requests; a benchmark needs it idle")
    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
    t = BatchTimings(start=time.monotonic())
    for i, prompt in enumerate(prompts):
        engine.add_request(f"bench-{tag}-{i}", prompt, params)
    while engine.has_unfinished():
        outputs = engine.step()
        sync()
        now = time.monotonic()
        for out in outputs:
            t.arrival.setdefault(out.request_id, out.metrics["arrival"])
            t.stamps.setdefault(out.request_id, []).extend([now] * len(out.new_token_ids))
    t.end = time.monotonic()
    _check_complete(t, len(prompts), output_len)
    return t


def _check_complete(t: BatchTimings, num_requests: int, output_len: int) -> None:
    short = {rid: len(s) for rid, s in t.stamps.items() if len(s) != output_len}
    if len(t.stamps) != num_requests or short:
        raise KilnError(
            f"benchmark requests did not each produce {output_len} tokens ({short or 'missing'}); "
            "lower --output-len or --input-len to fit the context length and KV cache"
        )


def bench_kiln(engine, workload: Workload, vocab_size: int, progress=None) -> list[dict]:
    """One warm-up batch, then one measured batch per batch size; returns result rows."""
    sync = device_sync(engine.loaded.device)
    run_batch(engine, workload.warmup_prompts(vocab_size), workload.output_len, "warmup", sync)
    rows = []
    for bs in workload.batch_sizes:
        _reset_peak_memory(engine.loaded.device)
        t = run_batch(
            engine, workload.prompts(bs, vocab_size), workload.output_len, f"bs{bs}", sync
        )
        rows.append(latency_row("kiln", bs, workload, t, _peak_memory_gb(engine.loaded.device)))
        if progress is not None:
            progress.update(1)
    return rows


def _reset_peak_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_gb(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e9
