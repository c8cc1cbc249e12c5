"""What each default-on pass is worth: the default pipeline, then each pass turned off in turn
(`--passes=-name`), measured through the product path: the compiled artifact that
`kiln bench throughput` (and `kiln serve`) runs for those toggles, compiled on a miss.

Per variant: decode ITL p50 at batch 1 and 32 (128-token prompts, 64 generated tokens) and the
time to first token of one 2048-token prompt (prefill, chunked by the engine's token budget),
after a warm-up batch each (`--repeat-default`: the default measured again last, so the
spread between its two rows shows the noise). Groups: bf16 (every default-on pass that
applies) and `--quantization fp8` (its quant fusions). A variant whose pass made no rewrite in
the default compile is captured first: when its post-pass graph, weights and token buckets
equal the default's, it compiles to the same code and reuses the default's row ("same
graph"); every other variant is compiled (in this one process, so Inductor's and Triton's
caches and imports are shared) and measured. Random bf16 weights (`benchmarks/gpu_shapes.py`).

    python benchmarks/pass_table.py --shape llama3-8b --out DIR [--groups bf16,fp8]

Device time, estimated from the H200 compile records of 2026-11-28 (an 8B piecewise compile
~85 s cold, ~45 s with Inductor warm) and ~20 s to load and measure a variant: 8B shape,
checkpoint ~1 min, bf16 (3 variants compiled, 2 same-graph captures) ~4.5 min, fp8 (4
compiled) ~4.5 min; the 1B shape about half. Writes DIR/pass_table.json and
DIR/pass_table.md (the table `docs/` can hold).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import time
from pathlib import Path

GROUPS = {"bf16": None, "fp8": "fp8"}  # group -> --quantization
# fp8: the passes that exist because of quantization; bf16: every default-on optional pass
FP8_PASSES = ("fuse_act_quant", "fuse_attn_quant", "fuse_norm_quant")
DECODE = dict(batch_sizes=(1, 32), input_len=128, output_len=64)
# A seed of its own: the decode prompts must not be a prefix of the prefill prompt.
PREFILL = dict(batch_sizes=(1,), input_len=2048, output_len=2, seed=1)  # input_len: --prefill-len
# No prefix caching: every prompt is computed (a benchmark's prompts may share blocks).
ENGINE = dict(max_model_len=4096, gpu_memory_utilization=0.8, enable_prefix_caching=False)
MINUTES = {"compile_cold": 85 / 60, "compile_warm": 45 / 60, "measure": 20 / 60}


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


def compile_variant(config) -> tuple[float, dict]:
    """(seconds, manifest) of the artifact for `config`, built now on a miss."""
    from kiln.resolve import engine_compile_options
    from lowering.compile import compile_model

    start = time.perf_counter()
    result = compile_model(engine_compile_options(config), progress=lambda *a: None)
    seconds = time.perf_counter() - start
    release()  # the compile's copy of the weights, before an engine sizes its KV cache
    return seconds, result.artifact.manifest


def release() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(config) -> dict:
    """Load the cached artifact as `kiln bench throughput` does, then decode and prefill."""

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
    by_batch = {r["batch_size"]: r for r in decode}
    return {
        "itl_bs1_ms": by_batch[1]["itl_p50_ms"], "itl_bs32_ms": by_batch[32]["itl_p50_ms"],
        "tok_s_bs1": by_batch[1]["tok_s"], "tok_s_bs32": by_batch[32]["tok_s"],
        "prefill_ms": prefill["ttft_p50_ms"],
    }  # fmt: skip


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


def same_graph_as_default(ckpt: Path, group: str, quantization, candidates: list[str]) -> set:
    """The candidate passes whose toggle-off leaves lowering's input unchanged."""
    import torch

    from kiln.config import EngineConfig, resolve_dtype
    from model_defs.loader import load_model

    if not candidates:
        return set()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, resolve_dtype("auto", device.type))
    model = load_model(ckpt, dtype, device)
    tokens = EngineConfig().max_num_batched_tokens
    try:
        default = fingerprint(model, quantization, None, tokens)
        return {
            p for p in candidates if fingerprint(model, quantization, f"-{p}", tokens) == default
        }
    finally:
        del model
        release()


def run_group(ckpt: Path, group: str, log, repeat_default: bool = False) -> list[dict]:
    """The group's default row, then one row per pass turned off."""
    quantization = GROUPS[group]
    seconds, manifest = compile_variant(engine_config(ckpt, quantization, None))
    rewrites = {p["name"]: p["rewrites"] for p in manifest.get("passes", [])}
    default = {"group": group, "passes": "default", "compile_s": seconds, "graph": "compiled",
               **measure(engine_config(ckpt, quantization, None))}  # fmt: skip
    log(default)
    rows = [default]
    toggled = toggled_passes(group, quantization)
    unchanged = same_graph_as_default(ckpt, group, quantization,
                                      [p for p in toggled if rewrites.get(p, 0) == 0])  # fmt: skip
    for name in toggled:
        row = {"group": group, "passes": f"-{name}", "rewrites_in_default": rewrites.get(name)}
        if name in unchanged:
            keep = ("itl_bs1_ms", "itl_bs32_ms", "tok_s_bs1", "tok_s_bs32", "prefill_ms")
            row |= {"graph": "same graph", "compile_s": None, **{k: default[k] for k in keep}}
        else:
            config = engine_config(ckpt, quantization, f"-{name}")
            row["compile_s"], _ = compile_variant(config)
            row |= {"graph": "compiled", **measure(config)}
        log(row)
        rows.append(row)
    if repeat_default:
        again = {"group": group, "passes": "default (again)", "compile_s": None,
                 "graph": "cached", **measure(engine_config(ckpt, quantization, None))}  # fmt: skip
        log(again)
        rows.append(again)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    """The table for `docs/`: ratios are the variant's time over its group's default (above
    1.00: the pass, off here, saves that much)."""
    n = PREFILL["input_len"]
    lines = [
        f"{meta['card']}, {meta['date']}, {meta['shape']} shape (random bf16 weights), "
        f"kiln {meta['commit']}: decode ITL p50 (prompt {DECODE['input_len']}, "
        f"{DECODE['output_len']} tokens out), TTFT of one {PREFILL['input_len']}-token prompt.",
        "",
        f"| group | passes | graph | compile s | ITL bs1 ms | ITL bs32 ms | prefill {n} ms "
        "| bs1 vs default | bs32 vs default | prefill vs default |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    defaults = {r["group"]: r for r in rows if r["passes"] == "default"}  # the first one
    for r in rows:
        base = defaults[r["group"]]
        ratios = [r[k] / base[k] for k in ("itl_bs1_ms", "itl_bs32_ms", "prefill_ms")]
        compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.0f}"
        lines.append(
            f"| {r['group']} | `{r['passes']}` | {r['graph']} | {compile_s} | "
            f"{r['itl_bs1_ms']:.2f} | {r['itl_bs32_ms']:.2f} | {r['prefill_ms']:.1f} | "
            + " | ".join(f"{x:.2f}x" for x in ratios) + " |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def estimate_minutes(groups: list[str]) -> float:
    """Upper bound: every variant compiled (same-graph variants take a capture instead)."""
    variants = sum(1 + len(toggled_passes(g, GROUPS[g])) for g in groups)
    compiles = MINUTES["compile_cold"] + (variants - 1) * MINUTES["compile_warm"]
    return compiles + variants * MINUTES["measure"]


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


def print_row(row: dict) -> None:
    print(json.dumps(row), flush=True)


def main() -> None:
    import torch

    from kiln.benchmarking.stats import card_name

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="llama3-8b",
                        help="llama3-8b, llama3.2-1b (quick) or demo (a CPU smoke run)")  # fmt: skip
    parser.add_argument("--ckpt", type=Path, help="checkpoint folder (default: made in /tmp)")
    parser.add_argument("--groups", default="bf16,fp8", help="bf16, fp8 or both")
    parser.add_argument("--prefill-len", type=int, default=PREFILL["input_len"])
    parser.add_argument("--repeat-default", action="store_true",
                        help="measure the default again after the variants (~20 s per group)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("pass_table"))
    opts = parser.parse_args()
    PREFILL["input_len"] = opts.prefill_len
    ENGINE["max_model_len"] = opts.prefill_len + 64
    groups = [g for g in opts.groups.split(",") if g]
    if unknown := set(groups) - set(GROUPS):
        parser.error(f"--groups: unknown {sorted(unknown)}; use bf16 and/or fp8")
    print(f"plan: {', '.join(groups)}; at most {estimate_minutes(groups):.1f} min on an 8B shape")
    ckpt = checkpoint(opts.shape, opts.ckpt)
    meta = {
        "card": card_name(), "date": datetime.date.today().isoformat(), "shape": opts.shape,
        "commit": commit(), "torch": torch.__version__, "decode": DECODE, "prefill": PREFILL,
        "engine": ENGINE, "metric": "itl_p50 of the decode batches; ttft_p50 of the prefill",
    }  # fmt: skip
    rows: list[dict] = []
    for group in groups:
        rows += run_group(ckpt, group, print_row, opts.repeat_default)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "pass_table.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    table = markdown(rows, meta)
    (opts.out / "pass_table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
