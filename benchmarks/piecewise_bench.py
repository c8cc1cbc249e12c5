"""Decode and prefill speed of one compiled artifact (GPU), to compare lowerings.

    python benchmarks/piecewise_bench.py CKPT ARTIFACT --label piecewise --out row.json
Rows: decode at batch 1 and 32 (128 prompt tokens, 32 generated, CUDA graphs), and a 2048-token
prefill (TTFT of a prompt the engine has not seen, prefix caching off). Run it once per
artifact, in a fresh process each, so loads do not share memory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    from benchmarks.gpu_shapes import bench_engine
    from kiln.config import EngineConfig
    from kiln.resolve import build_engine

    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--label", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    config = EngineConfig(
        str(args.checkpoint),
        artifact=str(args.artifact),
        max_num_seqs=32,
        max_num_batched_tokens=2048,
        max_model_len=4096,
        gpu_memory_utilization=0.85,
        enable_prefix_caching=False,  # the prefill figure is a whole 2048-token prefill
    )
    eng = build_engine(config)
    f = eng.loaded.runner.forward
    forward = type(getattr(f, "run", f)).__name__
    rows = [bench_engine(eng, b, 128, 32) for b in (1, 32)]
    prefill = bench_engine(eng, 1, 2048, 1)
    res = {
        "card": torch.cuda.get_device_name(),
        "label": args.label,
        "forward": forward,
        "startup_phases": eng.loaded.phases,
        "decode": rows,
        "prefill_2048_ttft_s": prefill["ttft_s"],
    }
    print(json.dumps(res), flush=True)
    args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
