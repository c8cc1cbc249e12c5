"""`python -X importtime` of `kiln serve`'s engine-core process, ranked.

Runs `kiln serve MODEL` through a launcher that points multiprocessing's spawn at a wrapper
running the interpreter with `-X importtime` and its stderr sent to a file per process, so
only the engine core's imports are kept (the API server process runs without it). The core is
spawned for this (KILN_CORE_FORK=0): a forked core, the default, runs no interpreter start of
its own and inherits what the server imported before the fork (the CLI, `runtime.engine_core`,
`compile_cache`), so this ranks everything the core needs. Waits for /health and
one completion (so imports the first step makes are counted), stops the server, then prints
the depth-0 imports ranked by cumulative time and which of the watched packages were loaded.

    python benchmarks/core_importtime.py demo [--log FILE] [--top N] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kiln.benchmarking.serve_startup import _complete_one, _stop, _wait_healthy, free_port

# Packages the engine core's step loop does not need; "loaded" says whether the core had them.
WATCHED = ("aiohttp", "transformers", "sympy", "torch._inductor", "torch._dynamo", "torch.export",
           "numpy", "msgspec", "server", "scheduler", "triton", "helion", "passes", "lowering",
           "jinja2", "safetensors", "tokenizers", "zmq", "yaml", "requests", "kiln.cli",
           "kiln.commands.bench", "kiln.commands.compile", "kiln.benchmarking")  # fmt: skip

LAUNCHER = """\
import multiprocessing, os, sys
multiprocessing.set_executable(os.environ["CORE_IMPORTTIME_PYTHON"])
from kiln.cli import main
if __name__ == "__main__":
    sys.exit(main())
"""


def parse(text: str) -> list[tuple[int, int, int, str]]:
    """(depth, self_us, cumulative_us, module) per `import time:` line, in file order."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_part, cum_us, name = line.split("|", 2)
        stripped = name.lstrip(" ")
        depth = (len(name) - len(stripped) - 1) // 2
        rows.append((depth, int(self_part.split(":")[1]), int(cum_us), stripped.rstrip()))
    return rows


def summarize(rows, top: int) -> dict:
    total = sum(cum for depth, _, cum, _ in rows if depth == 0)
    ranked = sorted(((cum, name) for depth, _, cum, name in rows if depth == 0), reverse=True)
    loaded = {name for *_, name in rows}
    watched = {}
    for pkg in WATCHED:
        hits = [(d, cum, n) for d, _, cum, n in rows if n == pkg or n.startswith(pkg + ".")]
        if hits:  # the cost of the package: its shallowest entries' cumulative times
            shallow = min(d for d, _, _ in hits)
            watched[pkg] = sum(cum for d, cum, _ in hits if d == shallow) / 1e6
    return {
        "total_s": total / 1e6,
        "modules": len(loaded),
        "top": [(name, cum / 1e6) for cum, name in ranked[:top]],
        "watched_s": watched,
    }


def run(model: str, log: Path, timeout_s: float) -> str:
    with tempfile.TemporaryDirectory(prefix="kiln-importtime-") as tmp:
        wrapper, launcher = Path(tmp) / "python", Path(tmp) / "launch.py"
        wrapper.write_text(
            f'#!/bin/sh\nexec {sys.executable} -X importtime "$@" 2>"{tmp}/imports.$$"\n'
        )
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        launcher.write_text(LAUNCHER)
        port = free_port()
        env = dict(os.environ, CORE_IMPORTTIME_PYTHON=str(wrapper), KILN_CORE_FORK="0")
        server_log = Path(tmp) / "serve.log"
        with open(server_log, "w") as out:
            proc = subprocess.Popen([sys.executable, str(launcher), "serve", model, "--port",
                                     str(port), "--log-level", "warning"], stdout=out,
                                    stderr=subprocess.STDOUT, env=env)  # fmt: skip
            try:
                _wait_healthy(proc, port, time.time() + timeout_s, server_log)
                _complete_one(port)
            finally:
                _stop(proc)
        # One file per spawned interpreter (the resource tracker is one too): the core's is
        # the one that imported the engine core's module.
        texts = [p.read_text() for p in sorted(Path(tmp).glob("imports.*"))]
        core = [t for t in texts if "| runtime.engine_core" in t]
        if len(core) != 1:
            raise SystemExit(f"expected one engine-core import log, found {len(core)}")
        log.write_text(core[0])
        return core[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="demo")
    ap.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "core-imports.txt")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json-out", type=Path)
    ap.add_argument("--reparse", action="store_true", help="summarize --log without running")
    args = ap.parse_args()
    text = args.log.read_text() if args.reparse else run(args.model, args.log, args.timeout)
    summary = summarize(parse(text), args.top)
    print(f"engine core: {summary['modules']} modules, {summary['total_s']:.3f} s of imports")
    for name, s in summary["top"]:
        print(f"  {s:7.3f}  {name}")
    print("watched packages (cumulative at their shallowest import; - = not imported):")
    for pkg in WATCHED:
        s = summary["watched_s"].get(pkg)
        print(f"  {pkg:24s} {'-' if s is None else f'{s:.3f}'}")
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
