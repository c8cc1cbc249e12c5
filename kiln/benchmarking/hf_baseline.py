"""The baseline: HF transformers eager `generate` (greedy) on the same prompts, dtype and device.

TTFT is the time of a 1-token generate of the batch (cheap, so it runs TTFT_REPEATS times and
keeps the median). ITL is the median gap between the token steps of the N-token generate, stamped
by a streamer that `generate` hands each step's tokens to (on the host, after the step), so it
comes from one run and a noisy host cannot make it negative. Only the p50 columns are filled.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from kiln.benchmarking.stats import median, ms
from kiln.benchmarking.throughput import device_sync
from kiln.benchmarking.workload import Workload

TTFT_REPEATS = 3


def load_hf_model(path: Path, dtype, device):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model.to(device).eval()


def left_pad(prompts: list[list[int]], pad_id: int, device):
    """input_ids [B, S] and attention_mask [B, S], shorter prompts padded on the left."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


class _StepStamps:
    """A `generate` streamer that records when each step's tokens reach the host (the first
    `put` is the prompt)."""

    def __init__(self):
        self.stamps: list[float] = []

    def put(self, value) -> None:
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass

    def gaps(self) -> list[float]:
        steps = self.stamps[1:]  # the prompt's put is not a step
        return [b - a for a, b in zip(steps, steps[1:], strict=False)]


def timed_generate(model, ids, mask, new_tokens: int, pad_id: int, sync, streamer=None) -> float:
    """Seconds for one greedy generate of exactly `new_tokens` tokens per row."""
    import torch
    from transformers import GenerationConfig

    gen = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           pad_token_id=pad_id)  # fmt: skip
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen,
                             streamer=streamer)  # fmt: skip
    sync()
    seconds = time.perf_counter() - t0
    assert out.shape[1] == ids.shape[1] + new_tokens, "HF generate stopped early"
    return seconds


def bench_hf(
    path: Path, workload: Workload, vocab_size: int, dtype, device, pad_id: int, progress=None
) -> list[dict]:
    """Warm up once, then per batch size: a 1-token generate (TTFT) and an N-token one."""
    import torch

    model = load_hf_model(path, dtype, device)
    sync = device_sync(device)
    n = workload.output_len
    ids, mask = left_pad(workload.warmup_prompts(vocab_size), pad_id, device)
    timed_generate(model, ids, mask, n, pad_id, sync)
    rows = []
    for bs in workload.batch_sizes:
        ids, mask = left_pad(workload.prompts(bs, vocab_size), pad_id, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ttft = median(
            [timed_generate(model, ids, mask, 1, pad_id, sync) for _ in range(TTFT_REPEATS)]
        )
        stamps = _StepStamps()
        total = timed_generate(model, ids, mask, n, pad_id, sync, stamps)
        itl = median(stamps.gaps()) if n > 1 else None
        peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
        rows.append({
            "engine": "hf", "batch_size": bs, "input_len": workload.input_len, "output_len": n,
            "tok_s": bs * n / total, "ttft_p50_ms": ms(ttft), "ttft_p99_ms": None,
            "itl_p50_ms": ms(itl), "itl_p99_ms": None, "peak_memory_gb": peak,
        })  # fmt: skip
        if progress is not None:
            progress.update(1)
    del model
    _free(device)
    return rows


def _free(device) -> None:
    """Give the baseline's memory back before the Kiln engine sizes its KV cache."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
