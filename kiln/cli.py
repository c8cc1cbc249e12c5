"""The `kiln` command line: one module per verb under `kiln/commands/`.

Each command module defines `add_parser(subparsers)` and `run(args) -> int`, and imports
heavy modules (torch, transformers, helion) inside `run`, so `kiln --help` stays instant.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys

from kiln import startup
from kiln.errors import KilnError

COMMANDS = (
    "generate", "serve", "compile", "ops", "passes", "bench", "cache", "dashboard", "env", "tune",
)  # fmt: skip


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `kiln` parser; with `only`, one of `COMMANDS`, it holds that command alone (the
    other command modules are not imported)."""
    parser = argparse.ArgumentParser(prog="kiln", description="Compile and serve LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"kiln.commands.{name}").add_parser(sub)
    return parser


def command_of(argv: list[str]) -> str | None:
    """The command `argv` names first, when it is one of `COMMANDS`; else None (`kiln`,
    `kiln --help`, a mistyped command: those need the parser of every command)."""
    return argv[0] if argv and argv[0] in COMMANDS else None


# Verbs that may run Inductor/Triton: their caches must live inside Kiln's cache folder
# (a fresh folder costs ~10 s of compiler probes), and be set before torch._inductor loads.
TOOL_CACHE_VERBS = ("generate", "serve", "compile", "bench", "passes", "tune")
# Verbs that build an engine: the cyclic collector pauses until it is built (kiln/startup.py).
# `generate` builds it in this process, so its GPU's driver and the weight stream start here
# while torch imports; `serve`'s engine-core process starts them itself (`build_core_engine`).
ENGINE_VERBS = ("generate", "serve")
# Verbs whose collector pauses from argument parsing (kiln/startup.py): until the engine is
# built, or to the end of a compile.
GC_PAUSE_VERBS = (*ENGINE_VERBS, "compile")
# Verbs whose process, run from the command line, ends without the interpreter's teardown:
# after a compile, freeing every module's objects one by one (torch, sympy, Triton) takes
# about 2 s of CPU on the 2-core machine, and nothing is left to clean up that needs it.
QUICK_EXIT_VERBS = ("compile",)


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` names (None: this process's command line, which a quick-exit
    verb then ends with `quick_exit`)."""
    own_process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    # `kiln serve` parses with serve's parser alone: no other command's module is imported
    # before the engine core is spawned.
    args = build_parser(command_of(argv)).parse_args(argv)
    if args.command in GC_PAUSE_VERBS:
        startup.pause_gc()  # resumed once the engine is built (kiln/startup.py)
    if args.command in TOOL_CACHE_VERBS:
        from compile_cache import configure_bytecode_cache, configure_tool_caches

        configure_bytecode_cache()  # first: head_start's own imports then read bytecode too
        if args.command == "generate":
            startup.head_start(args.model, args.device)
        configure_tool_caches()
    code = _run(args)
    if own_process and args.command in QUICK_EXIT_VERBS:
        quick_exit(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.run(args) or 0)
    except KilnError as e:
        print(f"kiln {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        startup.resume_gc(freeze=False)  # the command failed before its engine was built


def quick_exit(code: int) -> None:
    """End the process with `code`: the exit handlers run and the output is flushed, as at a
    normal exit, but the interpreter's teardown of every module is skipped."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
