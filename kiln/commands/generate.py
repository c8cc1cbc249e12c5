"""`kiln generate MODEL --prompt TEXT ...`: run prompts as one batch, print the completions."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from kiln import env, startup
from kiln.commands.flags import add_engine_arguments, engine_kwargs
from kiln.errors import KilnError


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate text for one or more prompts")
    p.add_argument("model", nargs="?", default="demo", help="checkpoint folder or 'demo'")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts-file", type=Path, help="one JSON string per line")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt, in order")
    add_engine_arguments(p)
    p.set_defaults(run=run)


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        if not args.prompts_file.is_file():
            raise KilnError(f"--prompts-file {args.prompts_file} does not exist")
        for n, line in enumerate(args.prompts_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = None
            if not isinstance(value, str):
                raise KilnError(f"{args.prompts_file}:{n}: each line must be one JSON string")
            prompts.append(value)
    if not prompts:
        raise KilnError("no prompt given: use --prompt TEXT or --prompts-file FILE")
    return prompts


def run(args: argparse.Namespace) -> int:
    prompts = read_prompts(args)
    from kiln.llm import LLM
    from runtime.sampling_params import SamplingParams

    params = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        seed=args.seed,
        stop=tuple(args.stop),
        ignore_eos=args.ignore_eos,
    )
    t_load_start = time.time()
    llm = LLM(args.model, **engine_kwargs(args))
    startup.resume_gc()
    print(f"kiln generate: {llm.engine.loaded.describe()}", file=sys.stderr, flush=True)
    t_ready = time.time()
    completions = llm.generate(prompts, params)
    t_done = time.time()
    for c in completions:
        if args.json:
            print(
                json.dumps(
                    {
                        "prompt_token_ids": c.prompt_token_ids,
                        "token_ids": c.token_ids,
                        "text": c.text,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(c.text)
        sys.stdout.flush()
    report = env.startup_report_path()
    if report is not None:
        loaded = llm.engine.loaded
        write_startup_report(report, loaded.phases, t_load_start, t_ready, t_done,
                             loaded.weight_figures)  # fmt: skip
    return 0


def write_startup_report(
    path: Path,
    phases: dict[str, float],
    t_load_start: float,
    t_ready: float,
    t_done: float,
    weights: dict[str, float] | None = None,
) -> None:
    """For `kiln bench startup`: wall-clock marks plus the engine's load phases (seconds).

    `imports` runs from `kiln.startup.PROCESS_START` to the start of the load; `t_first_token` is
    when generation ended (the first token, as the benchmark runs `--max-tokens 1`). `weights`:
    the weight stream's figures (`runtime.weights.Weights.figures`).
    """
    from kiln.startup import PROCESS_START

    report = {
        "phases": {"imports": t_load_start - PROCESS_START, **phases},
        "weights": weights or {},
        "t_process_start": PROCESS_START,
        "t_load_start": t_load_start,
        "t_ready": t_ready,
        "t_first_token": t_done,
    }
    path.write_text(json.dumps(report))
