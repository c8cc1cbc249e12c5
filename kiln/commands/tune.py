"""`kiln tune MODEL --target auto`: autotune the Helion kernels at the model's shapes on this
host's GPU and write the configs lowering pins (ir/kernels/configs/<target>/)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="autotune Helion kernels for this GPU at a model's shapes")
    p.add_argument("model", nargs="?", default="demo", help="checkpoint folder or 'demo'")
    p.add_argument("--target", default="auto", help="this host's GPU: auto, h100, h200, b200")
    p.add_argument(
        "--effort", default="quick", help="Helion's search effort: quick (minutes) or full"
    )
    p.add_argument("--tokens", type=int, default=32, help="rows to tune at (default 32)")
    p.add_argument("--kernels", default="", help="comma-separated kernels (default: all Helion)")
    p.add_argument(
        "--variants",
        default="model",
        help="'model': the variants a Llama-style model runs (neox, per-token); 'all'",
    )
    p.add_argument(
        "--budget-seconds",
        type=int,
        default=None,
        help="cap each variant's search (Helion's autotune_budget_seconds, where it has it)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lowering.tune import TuneOptions, tune_model

    options = TuneOptions(
        model=args.model,
        target=args.target,
        effort=args.effort,
        tokens=args.tokens,
        kernels=tuple(k for k in args.kernels.split(",") if k),
        variants=args.variants,
        budget_seconds=args.budget_seconds,
    )
    written = tune_model(options, progress=lambda m: print(m, file=sys.stderr, flush=True))
    for kernel, path in written.items():
        print(f"tuned     {kernel:<26} {path}")
    return 0
