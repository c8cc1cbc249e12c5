"""`kiln passes`: list the pass pipeline, or check each pass's numerics on a model.

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
    from passes.pipeline import default_pipeline

    rows = [
        {"name": p.name, "description": p.description, "enabled": p.enabled(cfg)}
        for p in default_pipeline()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']:<26} {'on ' if r['enabled'] else 'off'}  {r['description']}")
    return 0


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
