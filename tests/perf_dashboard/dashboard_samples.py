"""Sample records for the dashboard tests: random, non-zero, and shaped like real compiles."""

from __future__ import annotations

import random

from perf_dashboard import BenchRecord, CompileRecord, PassRecord

PASS_NAMES = ("eliminate_dead_code", "fuse_add_rms_norm", "fuse_silu_and_mul_quant", "pad_tokens")
COLD_PHASES = ("capture", "passes", "lowering", "codegen", "kernel_compile", "cache_write")
WARM_PHASES = ("cache_lookup", "load")


def make_passes(rng: random.Random) -> list[PassRecord]:
    passes, nodes = [], rng.randint(200, 400)
    for name in PASS_NAMES:
        after = nodes - rng.randint(1, 20)
        passes.append(PassRecord(name, rng.uniform(0.01, 0.8), rng.randint(1, 12), nodes, after))
        nodes = after
    return passes


def make_compile(
    rng: random.Random, *, cold: bool, created: float, model: str = "demo"
) -> CompileRecord:
    phases = COLD_PHASES if cold else WARM_PHASES
    return CompileRecord(
        model=model,
        target="cpu",
        key=f"{rng.getrandbits(128):032x}",
        cold=cold,
        phases={p: rng.uniform(0.05, 6.0 if cold else 0.4) for p in phases},
        passes=make_passes(rng) if cold else [],
        kernels={"native": rng.randint(1, 9), "triton": rng.randint(1, 9)},
        artifact_bytes=rng.randint(10_000, 9_000_000),
        versions={"torch": "2.13.0", "kiln": "0.1.0"},
        git_commit=f"{rng.getrandbits(160):040x}",
        host="build-host",
        created=created,
    )


def make_row(rng: random.Random, engine: str, batch_size: int) -> dict:
    return {
        "engine": engine,
        "batch_size": batch_size,
        "input_len": 128,
        "output_len": 64,
        "tok_s": rng.uniform(20.0, 1500.0),
        "ttft_p50_ms": rng.uniform(5.0, 90.0),
        "ttft_p99_ms": rng.uniform(90.0, 200.0),
        "itl_p50_ms": rng.uniform(3.0, 40.0),
        "itl_p99_ms": rng.uniform(40.0, 80.0),
        "peak_memory_gb": rng.uniform(1.0, 70.0),
    }


def make_bench(rng: random.Random, *, created: float, card: str = "NVIDIA H200") -> BenchRecord:
    rows = [make_row(rng, e, bs) for bs in (1, 32) for e in ("kiln", "hf")]
    startup = {p: rng.uniform(0.01, 0.5) for p in ("imports", "manifest", "kernels", "weights")}
    return BenchRecord(
        bench="throughput",
        model="llama-3.2-1b-shape",
        card=card,
        results=rows,
        startup=startup,
        host="gpu-box",
        created=created,
    )


DECODE = {"input_len": 128, "output_len": 64}
PREFILL = {"batch_size": 1, "input_len": 2048, "output_len": 2}


def variant(passes: str, itl1: float, itl32: float, ttft: float, quant: str = "none") -> list:
    """The three rows benchmarks/pass_table.py records per variant: decode ITL at batch 1 and
    32, the prefill's TTFT."""
    label = {"engine": "kiln", "passes": passes, "quantization": quant}
    return [
        {**label, "batch_size": 1, **DECODE, "tok_s": 1e3 / itl1, "itl_p50_ms": itl1,
         "ttft_p50_ms": 9.0},
        {**label, "batch_size": 32, **DECODE, "tok_s": 32e3 / itl32, "itl_p50_ms": itl32,
         "ttft_p50_ms": 30.0},
        {**label, **PREFILL, "tok_s": 2e3 / ttft, "ttft_p50_ms": ttft, "itl_p50_ms": None},
    ]  # fmt: skip


def pass_record(created: float = 1_790_000_000.0) -> BenchRecord:
    rows = (
        variant("default", 5.0, 8.0, 100.0)
        + variant("-fuse_add_rms_norm", 5.5, 8.8, 125.0)
        + variant("-eliminate_noops", 5.0, 8.0, 100.0)  # the default's figures, reused
        + variant("default", 5.1, 8.0, 98.0)
        + variant("default", 6.0, 9.0, 80.0, "fp8")
        + variant("-fuse_act_quant", 6.6, 9.0, 88.0, "fp8")
    )
    return BenchRecord(bench="passes", model="llama3-8b", card="NVIDIA H200", results=rows,
                       created=created)  # fmt: skip
