"""Compile a checkpoint for this GPU, then compare compiled vs reference logits (bf16).

Usage: python benchmarks/gpu_compile_check.py CKPT_DIR --out result.json
Reports cold compile phases, the warm lookup+load time, and max relative logit error.
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
    ap.add_argument("--phase", default="compile", choices=["compile", "check"])
    args = ap.parse_args()
    from compile_cache import configure_tool_caches

    configure_tool_caches()
    from lowering.compile import CompileOptions, compile_model
    from runtime.engine import Engine
    from runtime.model_runner import StepSeq

    res = {"card": torch.cuda.get_device_name(), "phase": args.phase}
    if args.phase == "compile":  # separate process: loading beside a live compile crashed
        opts = CompileOptions(model=args.model, target="auto", quantization=args.quantization)
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
    kw = dict(gpu_memory_utilization=0.4, max_model_len=2048, quantization=args.quantization)
    ref = Engine.from_args(args.model, compile="never", **kw)
    prompt = list(range(1000, 1100))
    batch = [StepSeq(prompt, 0, list(range(8)), True)]
    ref_logits = ref.loaded.runner.execute(batch)[0]
    del ref
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    comp = Engine.from_args(args.model, compile="cached", **kw)
    res["warm_load_phases"] = comp.loaded.phases
    got = comp.loaded.runner.execute(batch)[0]
    res["forward"] = type(comp.loaded.runner.forward).__name__
    res["logits_rel_err"] = ((got - ref_logits).abs().max() / ref_logits.abs().max()).item()
    res["cosine"] = torch.nn.functional.cosine_similarity(got, ref_logits, dim=0).item()
    print(json.dumps(res), flush=True)
    args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
