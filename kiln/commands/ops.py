"""`kiln ops [--target T]`: the dispatch table — each IR op's implementation and the rejects."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("ops", help="list IR ops and the implementation chosen for a target")
    p.add_argument("--target", default="auto", help="cpu, h100, h200, b200 or auto (this host)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ir.registry import dispatch_table
    from ir.targets import get_target

    try:
        import ir.kernels  # noqa: F401  (registers the Helion/Triton implementations)
    except ModuleNotFoundError:
        pass
    target = get_target(args.target)
    rows = dispatch_table(target)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "op": c.op,
                        "chosen": c.chosen.provider,
                        "rejected": [{"provider": p, "why": why} for p, why in c.rejected],
                    }
                    for c in rows
                ],
                indent=2,
            )
        )
        return 0
    print(f"target: {target.name}")
    width = max(len(c.op) for c in rows)
    print(f"{'op':<{width}}  {'chosen':<10}  rejected")
    for c in rows:
        rejected = "; ".join(f"{p}: {why}" for p, why in c.rejected) or "-"
        print(f"{c.op:<{width}}  {c.chosen.provider:<10}  {rejected}")
    return 0
