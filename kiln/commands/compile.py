"""`kiln compile MODEL --target T`: build (or find) the artifact and print what it took."""

from __future__ import annotations

import argparse
import json
import sys

from kiln.commands.flags import add_engine_arguments, engine_kwargs
from kiln.config import COMPILE_FIELDS


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile a model for a target into the cache")
    p.add_argument("model", nargs="?", default="demo", help="checkpoint folder or 'demo'")
    # The engine's own flags (defaults, choices, help): an artifact is found again only when
    # serve/generate pass the same values.
    add_engine_arguments(p, COMPILE_FIELDS)
    p.add_argument(
        "--lowering",
        default=None,
        choices=["auto", "piecewise", "monolithic", "plan"],
        help="auto (the default): plan for a GPU target, piecewise for the CPU; piecewise: "
        "AOTInductor, each distinct decoder layer compiled once; monolithic: the whole graph as "
        "one AOTInductor program; plan: cubins + an execution plan (GPU targets; what a build "
        "for a GPU this host lacks always makes)",
    )
    p.add_argument("--no-record", action="store_true", help="do not write a dashboard record")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the artifact's manifest (with its per-op table) as JSON on stdout",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lowering.helion_sources import start_early

    start_early(args.target, args.lowering)  # before torch: its imports run beside ours

    from kiln.config import DTYPES
    from kiln.errors import KilnError
    from kiln.resolve import compile_options
    from lowering.compile import compile_model
    from lowering.progress import CompileProgress

    if args.tensor_parallel_size < 1:
        raise KilnError(f"--tensor-parallel-size={args.tensor_parallel_size} must be >= 1")
    if args.dtype not in DTYPES:
        raise KilnError(f"--dtype={args.dtype!r} is not supported; use {', '.join(DTYPES)}")
    lowering = {"lowering": args.lowering} if args.lowering else {}
    options = compile_options(args.model, **engine_kwargs(args, COMPILE_FIELDS), **lowering)
    progress = CompileProgress(lambda m: print(m, file=sys.stderr, flush=True), sys.stderr)
    result = compile_model(options, progress=progress)
    if args.json:
        print(json.dumps(manifest_report(result), indent=2, sort_keys=True, default=str))
    else:
        print_summary(result)
    if not args.no_record:
        _record(result.record)
    return 0


def print_summary(result) -> None:
    man, rec = result.artifact.manifest, result.record
    print(
        f"{'compiled' if result.built else 'cache hit'}: {man['model']} for {man['target']['name']}"
        f" ({man['lowering']})"
    )
    print(f"key       {result.key}")
    print(f"artifact  {result.artifact.path} ({result.artifact.size} bytes)")
    for name, sec in (man.get("compile_phases") if result.built else rec["phases"]).items():
        print(f"phase     {name:<16} {sec:8.2f}s")
    for p in man.get("passes", []):
        print(
            f"pass      {p['name']:<26} rewrites {p['rewrites']:>4}  "
            f"nodes {p['nodes_before']}->{p['nodes_after']}  {p['seconds'] * 1e3:.1f}ms"
        )
    kernels = ", ".join(f"{k}: {v}" for k, v in sorted(man.get("kernels", {}).items()))
    print(f"kernels   {kernels}")
    if man.get("cubins"):  # a plan artifact: what it holds for the target
        triton = man["triton"]
        print(f"cubins    {len(man['cubins'])} for {man['arch']} in {result.artifact.path}/kernels "
              f"(Triton {triton['version']}, appended params: {', '.join(triton['scratch_params']) or 'none'})")  # fmt: skip
        calls = ", ".join(f"{op} x{n}" for op, n in man.get("library_calls", {}).items())
        print(f"library   {calls or '-'}")
    for line in format_op_table(man.get("ops", [])):
        print(line)
    for m in man.get("missed_fusions", []):
        print(f"missed    {m}")
    for line in man.get("pass_interactions", []):
        print(f"lost      {line}")


def _record(record: dict) -> None:
    try:
        from perf_dashboard.records import CompileRecord
        from perf_dashboard.store import DashboardStore
    except ImportError:
        return
    from perf_dashboard.provenance import git_commit

    DashboardStore().add_compile(CompileRecord(**{**record, "git_commit": git_commit()}))


def manifest_report(result) -> dict:
    """The manifest as `--json` prints it, with where it lives and whether it was built."""
    return {
        "built": result.built,
        "key": result.key,
        "artifact": str(result.artifact.path),
        "manifest": result.artifact.manifest,
    }


def format_op_table(rows: list[dict]) -> list[str]:
    """Lines of the per-op table: op, count in the graph, implementation, how, kernels."""
    if not rows:
        return []
    width = max(len(r["op"]) for r in rows)
    lines = [f"op        {'op':<{width}}  count  {'implementation':<20} {'runs':<17} kernels"]
    for r in rows:
        kernels = ", ".join(r["kernels"]) or "-"
        why = f"  ({r['why_reference']})" if r.get("why_reference") else ""
        lines.append(
            f"op        {r['op']:<{width}}  {r['count']:>5}  {r['implementation']:<20} "
            f"{r['runs']:<17} {kernels}{why}"
        )
    return lines
