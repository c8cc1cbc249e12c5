"""`kiln passes`: list the pass pipeline, check each pass's numerics on a model, or check how
passes interact (`--check MODEL`: a fusion that stopped matching because an earlier pass
consumed its pattern, per quantization).

Its `--passes` is the engine's flag (`EngineConfig.passes`), as in `generate` and `compile`.
"""

from __future__ import annotations

import json

from kiln.commands.flags import add_engine_arguments


def parse_pass_toggles(text: str | None):
    """`--passes` text -> `PassToggles`; an unknown pass name raises KilnError naming the valid."""
    from passes.pipeline import parse_toggles

    return parse_toggles(text)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("passes", help="list the pass pipeline; check pass numerics")
    parser.add_argument("--json", action="store_true", help="print the pipeline as JSON")
    parser.add_argument("--quantization", choices=("none", "fp8"), default="none")
    parser.add_argument("--fp8-group-size", type=int, default=0, help="0 = per-token scales")
    add_engine_arguments(parser, ["passes"])
    parser.add_argument(
        "--check-numerics",
        metavar="MODEL",
        help="run MODEL ('demo' or a checkpoint folder) after each pass; print max deviations",
    )
    parser.add_argument(
        "--check",
        metavar="MODEL",
        help="compile MODEL's graph under each quantization; report fusions that stopped "
        "matching because an earlier pass consumed their pattern (exit 1 if any)",
    )
    parser.add_argument(
        "--prompt-lens", default="7,1,4", help="prompt lengths of the random check batch"
    )
    parser.set_defaults(run=run)


def _config(args):
    from kiln.errors import KilnError
    from passes.config import PassConfig

    try:
        return PassConfig(
            quantization=args.quantization,
            fp8_group_size=args.fp8_group_size,
            toggles=parse_pass_toggles(args.passes),
        )
    except ValueError as e:
        raise KilnError(str(e)) from None


def run(args) -> int:
    cfg = _config(args)
    if args.check_numerics:
        return _check_numerics(args, cfg)
    if args.check:
        return _check_interactions(args, cfg)
    from passes.pipeline import default_pipeline

    rows = [
        {
            "name": p.name,
            "phase": p.phase,
            "default": "on" if p.default_on else "off",
            "description": p.description,
            "enabled": p.enabled(cfg),
        }
        for p in default_pipeline()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'pass':<26} {'phase':<14} {'default':<8} {'now':<4} description")
    for r in rows:
        now = "on" if r["enabled"] else "off"
        print(f"{r['name']:<26} {r['phase']:<14} {r['default']:<8} {now:<4} {r['description']}")
    return 0


def _check_interactions(args, cfg) -> int:
    """Each quantization's trace with its `alone` column; exit 1 if a fusion lost matches."""
    import dataclasses

    import torch

    from model_defs.loader import load_model
    from model_defs.registry import resolve_model_path
    from passes.compile import compile_graph
    from passes.config import QUANTIZATIONS

    model = load_model(resolve_model_path(args.check), torch.float32, "cpu")
    lost = 0
    for quantization in QUANTIZATIONS:
        _, trace = compile_graph(model, dataclasses.replace(cfg, quantization=quantization))
        print(f"model {args.check}, quantization {quantization}, --passes {args.passes or ''}")
        print(trace.table() + "\n")
        lost += len(trace.interactions)
    print(f"{lost} fusion(s) stopped matching because an earlier pass consumed their pattern")
    return 1 if lost else 0


def _check_numerics(args, cfg) -> int:
    import torch

    from kiln.errors import KilnError
    from model_defs.loader import load_model
    from model_defs.registry import resolve_model_path
    from passes.numerics import check_numerics, format_rows

    try:
        lens = [int(n) for n in args.prompt_lens.split(",")]
    except ValueError:
        raise KilnError(
            f"--prompt-lens {args.prompt_lens!r} must be comma-separated ints"
        ) from None
    if not lens or min(lens) < 1:
        raise KilnError(f"--prompt-lens {args.prompt_lens!r} needs positive lengths")
    model = load_model(resolve_model_path(args.check_numerics), torch.float32, "cpu")
    rows, trace = check_numerics(model, cfg, lens)
    print(f"model {args.check_numerics}: {sum(lens)} tokens in {len(lens)} sequences, fp32 CPU")
    print(format_rows(rows))
    for missed in trace.missed:
        print(f"missed fusion: {missed}")
    return 0
