"""Cold compile time against depth: a shallow and a deep checkpoint of one width, per lowering.

Each compile runs `kiln compile` in a fresh process over an empty Kiln cache folder, so the
Inductor and Triton caches inside it (compile_cache/tool_caches.py) start empty too: every
figure is a cold compile, C++ header precompiles and compiler probes included.

    python benchmarks/compile_depth.py --depths 4,16 --lowerings piecewise,monolithic \
        --out depth.json [--target cpu] [--shape tiny|llama3.2-1b|llama3-8b]
Prints a table and the deep/shallow ratio per lowering (goal for piecewise: <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(hidden_size=256, intermediate_size=704, num_attention_heads=4, num_key_value_heads=2)


def make_checkpoint(folder: Path, shape: str, depth: int) -> None:
    """Random weights of `shape` with `depth` layers, plus the demo tokenizer files."""
    import torch
    import transformers as tf

    from model_defs.demo import ensure_demo_checkpoint

    if shape == "tiny":
        dims = dict(TINY, vocab_size=512)
    else:
        from benchmarks.gpu_shapes import SHAPES

        dims = dict(SHAPES[shape])
    dims["num_hidden_layers"] = depth
    cfg = tf.LlamaConfig(**dims, max_position_embeddings=4096, rms_norm_eps=1e-5)
    device = "cuda" if torch.cuda.is_available() and shape != "tiny" else "cpu"
    with torch.device(device):
        model = tf.LlamaForCausalLM(cfg).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(folder)
    demo = ensure_demo_checkpoint()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(demo / name, folder / name)


def cold_compile(ckpt: Path, lowering: str, target: str, max_tokens: int) -> dict:
    """One `kiln compile` over empty caches: wall seconds and the phases it printed."""
    cache = Path(tempfile.mkdtemp(prefix="kiln-cold-"))
    env = {**os.environ, "KILN_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        env.pop(name, None)  # inside the empty Kiln cache folder, so they start empty
    argv = [sys.executable, "-m", "kiln", "compile", str(ckpt), "--target", target]
    argv += ["--lowering", lowering, "--max-num-batched-tokens", str(max_tokens), "--no-record"]
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the compile and its compiler children: unlike wall time, they do not
    # grow when other work shares the machine's cores.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"compile failed ({lowering}):\n{proc.stderr[-3000:]}")
    phases = {
        m[0]: float(m[1]) for m in re.findall(r"^phase\s+(\S+)\s+([\d.]+)s", proc.stdout, re.M)
    }
    pieces = [line for line in proc.stderr.splitlines() if "distinct pieces" in line]
    shutil.rmtree(cache, ignore_errors=True)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "phases": phases, "pieces": pieces}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", default="4,16")
    p.add_argument("--lowerings", default="piecewise,monolithic")
    p.add_argument("--shape", default="tiny", help="tiny, llama3.2-1b or llama3-8b")
    p.add_argument("--target", default="cpu")
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    work = Path(tempfile.mkdtemp(prefix="kiln-depth-"))
    results = {"shape": args.shape, "target": args.target, "runs": []}
    for depth in depths:
        ckpt = work / f"{args.shape}-{depth}"
        make_checkpoint(ckpt, args.shape, depth)
        for lowering in args.lowerings.split(","):
            run = cold_compile(ckpt, lowering, args.target, args.max_num_batched_tokens)
            results["runs"].append({"depth": depth, "lowering": lowering, **run})
            print(f"depth {depth:>3} {lowering:<11} cold compile {run['wall_s']:7.1f} s wall "
                  f"{run['cpu_s']:7.1f} s CPU  lower {run['phases'].get('lower', 0):6.1f} s",
                  flush=True)  # fmt: skip
    shallow, deep = min(depths), max(depths)
    ratios = {}
    for lowering in args.lowerings.split(","):
        runs = {r["depth"]: r for r in results["runs"] if r["lowering"] == lowering}
        ratios[lowering] = {
            kind: round(runs[deep][kind] / runs[shallow][kind], 3) for kind in ("wall_s", "cpu_s")
        }
        print(
            f"{lowering}: depth {deep} / depth {shallow} = {ratios[lowering]['wall_s']:.2f} "
            f"(wall), {ratios[lowering]['cpu_s']:.2f} (CPU seconds)"
        )
    results["ratio_deep_over_shallow"] = ratios
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
