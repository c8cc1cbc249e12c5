"""`kiln compile MODEL --target T`: build (or find) the artifact and print what it took."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile a model for a target into the cache")
    p.add_argument("model", nargs="?", default="demo", help="checkpoint folder or 'demo'")
    p.add_argument("--target", default="auto", help="cpu, h100, h200, b200 or auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--quantization", default=None, choices=["fp8"])
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--passes", default=None, help="pass toggles: 'none', '-name,+name'")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=512,
        help="largest step the graph is built for (must match serve/generate)",
    )
    p.add_argument(
        "--lowering",
        default=None,
        choices=["piecewise", "monolithic"],
        help="piecewise: compile each distinct decoder layer once (the default); monolithic: "
        "the whole graph as one program",
    )
    p.add_argument("--no-record", action="store_true", help="do not write a dashboard record")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kiln.errors import KilnError
    from lowering.compile import CompileOptions, compile_model
    from lowering.progress import CompileProgress

    if args.tensor_parallel_size < 1:
        raise KilnError(f"--tensor-parallel-size={args.tensor_parallel_size} must be >= 1")
    if args.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise KilnError(
            f"--dtype={args.dtype!r} is not supported; use auto, float32, bfloat16 or float16"
        )
    if args.max_model_len is not None:
        from model_defs.registry import read_config, resolve_model_path

        _, cfg = read_config(resolve_model_path(args.model))
        if not 2 <= args.max_model_len <= cfg.max_position_embeddings:
            raise KilnError(
                f"--max-model-len={args.max_model_len} must be in [2, "
                f"{cfg.max_position_embeddings}] (the model's max_position_embeddings)"
            )
    options = CompileOptions(
        model=args.model,
        target=args.target,
        dtype=args.dtype,
        quantization=args.quantization,
        tensor_parallel_size=args.tensor_parallel_size,
        passes=args.passes,
        max_num_tokens=args.max_num_batched_tokens,
        **({"lowering": args.lowering} if args.lowering else {}),
    )
    progress = CompileProgress(lambda m: print(m, file=sys.stderr, flush=True), sys.stderr)
    result = compile_model(options, progress=progress)
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
    for m in man.get("missed_fusions", []):
        print(f"missed    {m}")


def _record(record: dict) -> None:
    try:
        from perf_dashboard.records import CompileRecord
        from perf_dashboard.store import DashboardStore
    except ImportError:
        return
    from perf_dashboard.provenance import git_commit

    DashboardStore().add_compile(CompileRecord(**{**record, "git_commit": git_commit()}))
