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
    runs, why_reference = artifact_impls([c.op for c in rows], target)
    if args.json:
        print(json.dumps([_json_row(c, runs, why_reference) for c in rows], indent=2))
        return 0
    print(f"target: {target.name}")
    width = max(len(c.op) for c in rows)
    print(f"{'op':<{width}}  {'chosen':<10}  {'in artifact':<11}  rejected")
    for c in rows:
        rejected = [f"{p}: {why}" for p, why in c.rejected]
        if runs[c.op] != c.chosen.provider:
            rejected.insert(0, f"{c.chosen.provider} (in artifact): {why_reference[c.op]}")
        why = "; ".join(rejected) or why_reference.get(c.op, "-")
        print(f"{c.op:<{width}}  {c.chosen.provider:<10}  {runs[c.op]:<11}  {why}")
    return 0


def artifact_impls(ops: list[str], target) -> tuple[dict[str, str], dict[str, str]]:
    """What an artifact for `target` runs per op ({op: provider}, {op: why reference})."""
    from lowering.op_table import runnable_impls

    return runnable_impls(ops, target)


def _json_row(choice, runs: dict, why_reference: dict) -> dict:
    row = {
        "op": choice.op,
        "chosen": choice.chosen.provider,
        "in_artifact": runs[choice.op],
        "rejected": [{"provider": p, "why": why} for p, why in choice.rejected],
    }
    if choice.op in why_reference:
        row["why_reference"] = why_reference[choice.op]
    return row
