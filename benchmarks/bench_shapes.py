"""On the GPU machine: `kiln bench` throughput (vs HF) and startup on real model shapes.

Writes a random-weight checkpoint of each shape (`benchmarks/gpu_shapes.py`; no download),
then runs `kiln bench throughput ... --vs hf` and `kiln bench startup` on it, each in its own
process, leaving one importable record per run in --out:

    PYTHONPATH=. python benchmarks/bench_shapes.py --shape llama3.2-1b --out $OUT
    # back here: for f in results/*.json; do kiln bench --record $f; done
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
from pathlib import Path


def ensure_checkpoint(shape: str) -> Path:
    import torch

    from benchmarks.gpu_shapes import make_checkpoint

    folder = Path("/tmp") / f"ckpt-{shape}"
    if not (folder / "config.json").is_file():
        model = make_checkpoint(shape, folder)
        del model
        gc.collect()
        torch.cuda.empty_cache()  # the benches run in child processes and need the memory
    return folder


def kiln_bench(*words: str) -> None:
    cmd = [sys.executable, "-m", "kiln", "bench", *words]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", action="append", help="llama3-8b, llama3.2-1b (repeatable)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the JSON records")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3, help="startup runs per shape")
    ap.add_argument("engine_flags", nargs=argparse.REMAINDER, help="after --: engine flags")
    args = ap.parse_args()
    flags = [f for f in args.engine_flags if f != "--"]
    args.out.mkdir(parents=True, exist_ok=True)
    for shape in args.shape or ["llama3.2-1b"]:
        folder = str(ensure_checkpoint(shape))
        kiln_bench("throughput", folder, "--batch-sizes", args.batch_sizes,
                   "--input-len", str(args.input_len), "--output-len", str(args.output_len),
                   "--vs", "hf", "--max-model-len", "2048",
                   "--json-out", str(args.out / f"throughput-{shape}.json"), *flags)  # fmt: skip
        kiln_bench("startup", folder, "--runs", str(args.runs), "--max-model-len", "2048",
                   "--json-out", str(args.out / f"startup-{shape}.json"), *flags)  # fmt: skip


if __name__ == "__main__":
    main()
