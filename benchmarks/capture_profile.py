"""Where a compile's load and capture+passes time goes, before and after the changes that cut it.

Each variant runs in a fresh process (so the first capture's one-time costs count, as in a real
compile) and does what `kiln compile` does before lowering: build the model (reading the
checkpoint, or uninitialised weights of its shapes), capture, run the passes, hash the graph.
Variants (the baseline measured in the same run):
    before   the checkpoint read, every layer traced, IR ops' fakes run on every call
    memo     + fake implementations memoized per input description (ir/fake_memo.py)
    layers   + four layers traced and the rest copied (passes/capture_layers.py)
    after    + uninitialised weights instead of the checkpoint's (lowering/compile.py)
Every variant must print the same graph hash. Wall and CPU seconds per phase; with
--cprofile N, the N functions with the most cumulative time of the capture+passes.

    python benchmarks/capture_profile.py CKPT [--dtype float32] [--target cpu] [--runs 1]
        [--variants before,memo,layers,after] [--cprofile 25] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("before", "memo", "layers", "after")


def child(ckpt: Path, variant: str, dtype_name: str, cprofile: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    import torch

    import ir.fake_memo as fake_memo
    from lowering.compile import pass_config
    from model_defs.loader import build_model, load_model
    from model_defs.registry import read_config
    from passes import capture_layers
    from passes.compile import compile_graph

    out = {"variant": variant, "imports": _since(t0, c0)}
    fake_memo.ENABLED = variant != "before"
    if variant in ("before", "memo"):
        capture_layers.probe = lambda model: None
    dtype = getattr(torch, dtype_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0, c0 = time.perf_counter(), time.process_time()
    if variant == "after":
        _, cfg = read_config(ckpt)
        model = build_model(cfg, dtype, device, _par())
    else:
        model = load_model(ckpt, dtype, device)
    out["load"] = _since(t0, c0)
    profiler = None
    if cprofile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    _, trace = compile_graph(model, pass_config(None, None), max_num_tokens=512)
    out["capture+passes"] = _since(t0, c0)
    if profiler is not None:
        profiler.disable()
        _print_profile(profiler, cprofile)
    out["capture_s"] = round(trace.capture_s, 3)
    out["passes_s"] = round(sum(p.wall_s for p in trace.passes), 3)
    out["graph_hash"] = trace.graph_hash
    return out


def _par():
    from model_defs.decoder import ParallelConfig

    return ParallelConfig()


def _since(t0: float, c0: float) -> dict:
    return {"wall": round(time.perf_counter() - t0, 3), "cpu": round(time.process_time() - c0, 3)}


def _print_profile(profiler, top: int) -> None:
    import io
    import pstats

    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    print(text.getvalue(), file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ckpt", type=Path)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--cprofile", type=int, default=0, help="print the top N functions")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.ckpt, args.child, args.dtype, args.cprofile)))
        return 0
    rows = []
    for _ in range(args.runs):
        for variant in args.variants.split(","):
            if variant not in VARIANTS:
                raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
            cmd = [sys.executable, __file__, str(args.ckpt), "--child", variant,
                   "--dtype", args.dtype, "--cprofile", str(args.cprofile)]  # fmt: skip
            paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            if args.cprofile:
                print(f"--- {variant}\n{proc.stderr}", file=sys.stderr)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    _table(rows)
    if len({r["graph_hash"] for r in rows}) != 1:
        print("GRAPH HASHES DIFFER between variants", file=sys.stderr)
        return 1
    if args.out:
        args.out.write_text(json.dumps({"ckpt": str(args.ckpt), "rows": rows}, indent=1) + "\n")
    return 0


def _table(rows: list[dict]) -> None:
    head = f"{'variant':8} {'load wall/cpu s':>16} {'capture+passes wall/cpu s':>26} "
    print(head + f"{'capture s':>10} {'passes s':>9}  graph hash")
    for r in rows:
        load, cp = r["load"], r["capture+passes"]
        print(f"{r['variant']:8} {load['wall']:>8.2f}/{load['cpu']:<7.2f} "
              f"{cp['wall']:>14.2f}/{cp['cpu']:<11.2f} {r['capture_s']:>10.2f} "
              f"{r['passes_s']:>9.2f}  {r['graph_hash'][:12]}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
