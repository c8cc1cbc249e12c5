"""Compile a checkpoint for this GPU, then compare compiled vs reference logits (bf16).

Usage: python benchmarks/gpu_compile_check.py CKPT_DIR --phase compile|refattn|check --out R.json
Reports cold compile phases, the warm lookup+load time, and max relative logit error; with
--rows, the check also shows how far a mathematically equal eager variant (refattn) moves the
reference, which is the dtype's noise floor on this model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quantization", default=None)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--phase", default="compile", choices=["compile", "check", "refattn"])
    ap.add_argument(
        "--rows", type=Path, default=None,
        help="refattn: where to save its logits rows; check: compare them with the reference",
    )  # fmt: skip
    args = ap.parse_args()
    from compile_cache import configure_tool_caches

    configure_tool_caches()
    from lowering.compile import CompileOptions, compile_model

    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    res = {"card": card, "phase": args.phase}
    if args.phase == "compile":  # separate process: loading beside a live compile crashed
        opts = CompileOptions(
            model=args.model, target="auto", quantization=args.quantization, dtype=args.dtype
        )
        t0 = time.perf_counter()
        result = compile_model(opts, progress=print)
        res.update(
            cold_compile_s=time.perf_counter() - t0,
            built=result.built,
            compile_phases=result.artifact.manifest.get("compile_phases"),
            kernels=result.artifact.manifest.get("kernels"),
        )
        print(json.dumps(res), flush=True)
        args.out.write_text(json.dumps(res, indent=2))
        return
    kw = dict(gpu_memory_utilization=0.85, max_model_len=2048)  # one engine at a time
    if args.phase == "refattn":
        # The noise floor of the dtype: the same eager engine with one op swapped for a
        # mathematically equal implementation (attention's IR reference, fp32 inside like the
        # Triton kernel). Its own process: kernel bindings last for the whole process.
        import runtime.loaders.eager

        runtime.loaders.eager._bind_cuda_kernels = lambda: None
        eager = dict(model=args.model, compile="never", dtype=args.dtype, enforce_eager=True)
        torch.save(run_steps(eager | kw), args.rows)
        return
    # References: the unquantized eager engine in the checked dtype (fp8's tolerance is set
    # against it) and in fp32, to show how far the dtype alone moves the logits.
    kw["model"] = args.model
    ref = run_steps(dict(compile="never", dtype=args.dtype) | kw)
    ref32 = run_steps(dict(compile="never", dtype="float32") | kw)
    comp = run_steps(
        dict(compile="cached", dtype=args.dtype, quantization=args.quantization) | kw, keep=res
    )
    res["steps"] = STEP_TOKENS
    res["compiled_vs_ref"] = compare(comp, ref)
    res["ref_vs_fp32"] = compare(ref, ref32)
    res["compiled_vs_fp32"] = compare(comp, ref32)
    if args.quantization:
        # The same quantized graph run eagerly (the passes' output, IR references): separates
        # what lowering changes from what quantization itself costs.
        eager_q = dict(compile="never", passes="", quantization=args.quantization)
        ref_q = run_steps(eager_q | dict(dtype=args.dtype) | kw)
        res["compiled_vs_eager_quantized"] = compare(comp, ref_q)
        res["eager_quantized_vs_ref"] = compare(ref_q, ref)
    if args.rows is not None and args.rows.exists():
        res["ref_attention_swapped_vs_ref"] = compare(torch.load(args.rows), ref)
    print(json.dumps(res), flush=True)
    args.out.write_text(json.dumps(res, indent=2))


def run_steps(engine_args: dict, keep: dict | None = None) -> list:
    """Logits rows of every check step on the engine `kiln.resolve.build_engine` builds for `engine_args`, which is built and
    freed here (nothing else holds it, so its GPU memory is back before the next one is built).
    `keep`, when given, receives the engine's load phases and forward type."""
    import gc

    from kiln.config import EngineConfig
    from kiln.resolve import build_engine

    engine = build_engine(EngineConfig(**engine_args))
    if keep is not None:
        keep.update(
            warm_load_phases=engine.loaded.phases,
            artifact_key=engine.loaded.artifact_key,
            graphs=engine.loaded.runner.graphs is not None,
            activation_peak_bytes=engine.loaded.activation_peak_bytes,
            warm_every_bucket=getattr(engine.loaded.runner.graphs, "warm_every_bucket", None),
        )
    rows = []
    for batch in check_steps(engine.loaded.vocab_size):
        rows.extend(engine.loaded.runner.execute(batch).float().cpu())
    del engine
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def compare(got: list, want: list) -> dict:
    """Max-abs relative error (max |got - want| / max |want|) and cosine, worst row."""
    errs = [((g - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want)]
    cos = [torch.nn.functional.cosine_similarity(g, w, dim=0).item() for g, w in zip(got, want)]
    return {"rel_err_max": max(errs), "cosine_min": min(cos), "rel_err_rows": errs}


STEP_TOKENS = [137, 2, 1]


def check_steps(vocab: int):
    """A mixed prefill of two sequences, a two-sequence decode, then a one-sequence decode:
    the token counts (139, 2, 1) cover the general, multi-sequence and single-token graphs."""
    from model_defs.step_inputs import StepSeq

    a, b = [(1000 + i) % vocab for i in range(100)], [(2000 + 3 * i) % vocab for i in range(37)]
    blocks_a, blocks_b = list(range(0, 8)), list(range(8, 12))
    return [
        [StepSeq(a, 0, blocks_a, True), StepSeq(b, 0, blocks_b, True)],
        [StepSeq([7], 100, blocks_a, True), StepSeq([9], 37, blocks_b, True)],
        [StepSeq([11], 101, blocks_a, True)],
    ]


if __name__ == "__main__":
    main()
