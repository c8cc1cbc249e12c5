"""What each default-on pass is worth: the default pipeline, then each pass turned off in turn
(`--passes=-name`), then the default again, each measured through the compiled artifact of its
toggles (`--lowering`: piecewise, the default, or plan: on an H200 an 8B plan compiled in 45 s
against 100 s piecewise, benchmarks/results/h200-llama3-8b-plan-carried-2026-11-28.json).

Per variant: decode ITL p50 at batch 1 and 32 (128-token prompts, 64 generated tokens) and the
time to first token of one 2048-token prompt (prefill, chunked by the engine's token budget),
after a warm-up batch each, prefix caching off and every prompt drawn fresh. The default's
second row (last in its group) shows the run's noise. Groups: bf16 (every default-on pass that
applies) and `--quantization fp8` (its quant fusions). A variant whose pass made no rewrite in
the default compile is captured first: when its post-pass graph, weights and token buckets
equal the default's, it compiles to the same code and reuses the default's figures ("same
graph"); every other variant is compiled (in this one process, so Inductor's and Triton's
caches and imports are shared) and measured. Random bf16 weights (`benchmarks/gpu_shapes.py`).

    python -m benchmarks.pass_table --shape llama3-8b --lowering plan --groups bf16 --out DIR
    python -m benchmarks.pass_table --shape demo --groups bf16 --prefill-len 1024 --out DIR  # CPU

Writes DIR/pass_table.json (the results), DIR/pass_table.md (the table,
`benchmarks/pass_table_report.py`) and DIR/pass_table.record.json (the dashboard's record:
`kiln bench --record FILE`). Device time: `estimate_minutes` (printed first).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import time
from pathlib import Path

from benchmarks.artifacts import LOWERINGS, compile_variant, release, running

GROUPS = {"bf16": None, "fp8": "fp8"}  # group -> --quantization
# fp8: the passes that exist because of quantization; bf16: every default-on optional pass
FP8_PASSES = ("fuse_act_quant", "fuse_attn_quant", "fuse_norm_quant")
DECODE = dict(batch_sizes=(1, 32), input_len=128, output_len=64)
# A seed of its own: the decode prompts must not be a prefix of the prefill prompt.
PREFILL = dict(batch_sizes=(1,), input_len=2048, output_len=2, seed=1)  # input_len: --prefill-len
# No prefix caching: every prompt is computed (a benchmark's prompts may share blocks).
ENGINE = dict(max_model_len=4096, gpu_memory_utilization=0.8, enable_prefix_caching=False)
# Seconds on the 8B shape, an upper bound (H200 records of 2026-11-28: piecewise ~85 s cold,
# ~45 s with Inductor warm; a plan 45 s cold, its variants estimated at 30 s; a plan artifact
# loads in ~2.5 s, its decode and prefill measures take seconds, 20 s is the bound).
SECONDS = {"piecewise": (85, 45), "plan": (45, 30), "measure": 20}


def toggled_passes(group: str, quantization: str | None) -> list[str]:
    """Default-on optional passes that apply to the group's pass config, in pipeline order."""
    from lowering.compile import pass_config
    from passes.pipeline import default_pipeline

    if group == "fp8":
        return list(FP8_PASSES)
    cfg = pass_config(None, quantization)
    return [p.name for p in default_pipeline() if p.optional and p.enabled(cfg)]


def engine_config(ckpt: Path, quantization: str | None, passes: str | None, **kw):
    from kiln.config import EngineConfig

    return EngineConfig(model=str(ckpt), quantization=quantization, passes=passes, **ENGINE, **kw)


def measure(config) -> list[dict]:
    """`kiln bench throughput`'s rows for the artifact `config` names: decode at each batch
    size, then the prefill (its row's ITL cleared: its figure is the TTFT)."""
    from kiln.benchmarking.throughput import bench_kiln
    from kiln.benchmarking.workload import Workload
    from kiln.resolve import build_engine

    engine = build_engine(config)
    try:
        vocab = engine.loaded.vocab_size
        if not engine.loaded.artifact_key:
            raise RuntimeError(f"{config.passes}: the eager model ran, not a compiled artifact")
        bench_kiln(engine, Workload((1,), DECODE["input_len"], 8, seed=2), vocab)  # warm bs1
        decode = bench_kiln(engine, Workload(**DECODE), vocab)
        prefill = bench_kiln(engine, Workload(**PREFILL), vocab)[0]
    finally:
        del engine
        release()
    return [*decode, {**prefill, "itl_p50_ms": None, "itl_p99_ms": None}]


def summary(bench: list[dict]) -> dict:
    """The table's figures from `measure`'s rows."""
    decode = {r["batch_size"]: r for r in bench if r["input_len"] == DECODE["input_len"]}
    prefill = next(r for r in bench if r["input_len"] == PREFILL["input_len"])
    return {
        "itl_bs1_ms": decode[1]["itl_p50_ms"], "itl_bs32_ms": decode[32]["itl_p50_ms"],
        "tok_s_bs1": decode[1]["tok_s"], "tok_s_bs32": decode[32]["tok_s"],
        "prefill_ms": prefill["ttft_p50_ms"],
    }  # fmt: skip


def measured(config, bench: list[dict] | None = None) -> dict:
    """A row's figures: measured now, or `bench` (a same-graph variant's, the default's)."""
    bench = bench if bench is not None else measure(config)
    return {**summary(bench), "bench": bench}


def fingerprint(model, quantization: str | None, passes: str | None, max_tokens: int) -> str:
    """sha256 of what lowering receives: the post-pass graph, weight names/shapes/dtypes, the
    LM head's shape and the token buckets."""
    from lowering.compile import pass_config
    from passes.capture import graph_hash
    from passes.compile import compile_graph

    passed, _ = compile_graph(model, pass_config(passes, quantization), max_num_tokens=max_tokens)
    weights = sorted((n, tuple(t.shape), str(t.dtype)) for n, t in passed.weights.items())
    text = repr((graph_hash(passed.gm), weights, tuple(passed.lm_head.shape), passed.token_buckets))
    return hashlib.sha256(text.encode()).hexdigest()


def capture_model(ckpt: Path, quantization: str | None):
    """The decoder a compile captures: zero weights of the checkpoint's shapes, or its values
    when quantized (the fp8 weights are derived from them), on the GPU when there is one."""
    import torch

    from kiln.config import resolve_dtype
    from model_defs.decoder import ParallelConfig
    from model_defs.loader import build_model, load_model
    from model_defs.registry import read_config

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, resolve_dtype("auto", device.type))
    if quantization is not None:
        return load_model(ckpt, dtype, device)
    model = build_model(read_config(ckpt)[1], dtype, device, ParallelConfig())
    for p in model.parameters():
        p.detach().zero_()
    return model


def same_graph_as_default(ckpt: Path, quantization, candidates: list[str], tokens: int) -> set:
    """The candidate passes whose toggle-off leaves lowering's input unchanged."""
    if not candidates:
        return set()
    model = capture_model(ckpt, quantization)
    try:
        default = fingerprint(model, quantization, None, tokens)
        return {
            p for p in candidates if fingerprint(model, quantization, f"-{p}", tokens) == default
        }
    finally:
        del model
        release()


def run_group(ckpt: Path, group: str, lowering: str, log, repeat_default: bool = True) -> list:
    """The group's default row, one row per pass turned off, then the default again."""
    quantization = GROUPS[group]
    default_config = engine_config(ckpt, quantization, None)
    seconds, artifact = compile_variant(default_config, lowering)
    run_default = running(default_config, artifact)
    rewrites = {p["name"]: p["rewrites"] for p in artifact.manifest.get("passes", [])}
    default = {"group": group, "passes": "default", "compile_s": seconds, "graph": "compiled",
               **measured(run_default)}  # fmt: skip
    log(default)
    rows = [default]
    toggled = toggled_passes(group, quantization)
    idle = [p for p in toggled if rewrites.get(p, 0) == 0]
    unchanged = same_graph_as_default(ckpt, quantization, idle,
                                      default_config.max_num_batched_tokens)  # fmt: skip
    for name in toggled:
        row = {"group": group, "passes": f"-{name}", "rewrites_in_default": rewrites.get(name)}
        if name in unchanged:
            row |= {"graph": "same graph", "compile_s": None,
                    **measured(None, default["bench"])}  # fmt: skip
        else:
            config = engine_config(ckpt, quantization, f"-{name}")
            row["compile_s"], art = compile_variant(config, lowering)
            row |= {"graph": "compiled", **measured(running(config, art))}
        log(row)
        rows.append(row)
    if repeat_default:
        again = {"group": group, "passes": "default", "compile_s": None, "graph": "cached",
                 **measured(run_default)}  # fmt: skip
        log(again)
        rows.append(again)
    return rows


def estimate_minutes(groups: list[str], lowering: str) -> float:
    """Upper bound on the 8B shape: every variant compiled (a same-graph variant takes a
    capture instead), the default measured twice."""
    variants = sum(1 + len(toggled_passes(g, GROUPS[g])) for g in groups)
    cold, warm = SECONDS[lowering]
    seconds = cold + (variants - 1) * warm + (variants + len(groups)) * SECONDS["measure"]
    return seconds / 60


def checkpoint(shape: str, folder: Path | None) -> Path:
    """A random-weight checkpoint of the shape (kept in /tmp), or the demo model's."""
    from benchmarks.gpu_shapes import make_checkpoint
    from model_defs.registry import resolve_model_path

    if shape == "demo":
        return resolve_model_path("demo")
    folder = folder or Path(f"/tmp/ckpt-{shape}")
    if not (folder / "config.json").is_file():
        make_checkpoint(shape, folder)
    return folder


def commit() -> str:
    import subprocess

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                          text=True)  # fmt: skip
    return proc.stdout.strip() or "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="llama3-8b",
                        help="llama3-8b, llama3.2-1b (quick) or demo (a CPU smoke run)")  # fmt: skip
    parser.add_argument("--ckpt", type=Path, help="checkpoint folder (default: made in /tmp)")
    parser.add_argument("--groups", default="bf16,fp8", help="bf16, fp8 or both")
    parser.add_argument("--lowering", default="piecewise", choices=LOWERINGS,
                        help="piecewise (what `kiln serve` looks up) or plan (GPU only)")  # fmt: skip
    parser.add_argument("--prefill-len", type=int, default=PREFILL["input_len"])
    parser.add_argument("--no-repeat-default", dest="repeat_default", action="store_false",
                        help="skip the default's second measure (~20 s per group)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("pass_table"))
    opts = parser.parse_args(argv)
    opts.groups = [g for g in opts.groups.split(",") if g]
    if unknown := set(opts.groups) - set(GROUPS):
        parser.error(f"--groups: unknown {sorted(unknown)}; use bf16 and/or fp8")
    if opts.lowering == "plan" and not torch.cuda.is_available():
        parser.error("--lowering plan builds cubins for this host's GPU, and it has none")
    return opts


def write(out: Path, meta: dict, rows: list[dict]) -> str:
    """Write the results, the record and the table of the rows so far (a run cut short keeps
    what it measured); returns the table."""
    from benchmarks.pass_table_report import bench_record, markdown

    load = [*meta["load_average_1min"][:1], os.getloadavg()[0]]  # at the start, and now
    results = {**meta, "load_average_1min": load, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "pass_table.json").write_text(json.dumps(results, indent=1))
    (out / "pass_table.record.json").write_text(bench_record(results).to_json(indent=1))
    table = markdown(results)
    (out / "pass_table.md").write_text(table)
    return table


def main(argv: list[str] | None = None) -> None:
    import torch

    from compile_cache import configure_tool_caches
    from kiln.benchmarking.stats import card_name

    opts = parse_args(argv)
    configure_tool_caches()  # Inductor's and Triton's caches where `kiln compile` keeps them
    PREFILL["input_len"] = opts.prefill_len
    ENGINE["max_model_len"] = opts.prefill_len + 64
    minutes = estimate_minutes(opts.groups, opts.lowering)
    print(f"plan: {', '.join(opts.groups)}, {opts.lowering}; at most {minutes:.1f} min on 8B")
    ckpt = checkpoint(opts.shape, opts.ckpt)
    meta = {
        "card": card_name(), "date": datetime.date.today().isoformat(), "created": time.time(),
        "shape": opts.shape, "lowering": opts.lowering, "commit": commit(),
        "torch": torch.__version__, "decode": DECODE, "prefill": PREFILL, "engine": ENGINE,
        "metric": "itl_p50 of the decode batches; ttft_p50 of the prefill",
        "load_average_1min": [os.getloadavg()[0]],
    }  # fmt: skip
    rows: list[dict] = []

    def log(row: dict) -> None:
        print(json.dumps({k: v for k, v in row.items() if k != "bench"}), flush=True)
        rows.append(row)
        write(opts.out, meta, rows)

    for group in opts.groups:
        run_group(ckpt, group, opts.lowering, log, opts.repeat_default)
    print(write(opts.out, meta, rows))


if __name__ == "__main__":
    main()
