"""Cold `kiln compile` phase by phase, in wall and CPU seconds, of two source trees interleaved.

Each run is `python -m kiln compile CKPT --target T --json` in a fresh process over an empty
Kiln cache folder (so Triton's and Inductor's caches inside it start empty too), with the
source tree under test first on the path. The phases are timed as the compile prints them
(`lowering/progress.py`), in wall seconds and in CPU seconds of the process (every thread) and
its children (ptxas); `startup` is from exec to the first phase (imports), `exit` from the
last phase to the process's end (the store's write, printing, interpreter shutdown). On a
machine shared with other work, CPU seconds are the steadier figure.

    python benchmarks/compile_phases.py --shapes llama3-8b [llama3.2-1b] --target h200 \
        --before HEAD --runs 3 --out result.json
`--before REV` is exported with `git archive` and run alternately with the working tree; the
checkpoints are shape-only (benchmarks/plan_carry.py: sparse files, a bf16 plan reads no data).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(out: Path, argv: list[str]) -> None:
    """Run `kiln compile` in this process, writing each phase's wall and CPU seconds to
    `out` at exit. The tree under test is first on sys.path (the parent's PYTHONPATH)."""
    import atexit
    from contextlib import contextmanager

    started = time.time()
    marks: dict = {"started": started, "phases": {}}

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    from lowering import progress

    real_phase = progress.CompileProgress.phase

    @contextmanager
    def phase(self, name, phases):
        marks.setdefault("first_phase", time.time())
        wall, c0 = time.time(), cpu()
        with real_phase(self, name, phases):
            yield
        row = marks["phases"].setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
        row["wall_s"] += time.time() - wall
        row["cpu_s"] += cpu() - c0
        marks["last_phase"] = time.time()

    progress.CompileProgress.phase = phase

    def done() -> None:
        marks["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        out.write_text(json.dumps(marks))

    atexit.register(done)
    from kiln.cli import main

    sys.argv = ["kiln", *argv]  # the process's own command line, as `kiln compile` runs
    sys.exit(main())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def export_tree(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run_once(tree: Path, ckpt: Path, target: str, max_tokens: int) -> dict:
    """One cold compile of `ckpt` by the sources in `tree`: phases, totals, max RSS."""
    cache = Path(tempfile.mkdtemp(prefix="kiln-phases-"))
    marks_file = cache / "marks.json"
    env = {**os.environ, "KILN_CACHE_DIR": str(cache / "kiln"), "PYTHONPATH": str(tree)}
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        env.pop(name, None)  # inside the empty Kiln cache folder, so they start empty
    argv = ["compile", str(ckpt), "--target", target, "--max-num-batched-tokens",
            str(max_tokens), "--json", "--no-record"]  # fmt: skip
    start, before = time.time(), _children_cpu()
    proc = subprocess.run([sys.executable, __file__, "child", str(marks_file), *argv], cwd=tree,
                          env=env, capture_output=True)  # fmt: skip
    end, cpu = time.time(), _children_cpu() - before
    stdout, stderr = proc.stdout, proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"compile failed in {tree}:\n{stderr.decode()[-3000:]}")
    marks = json.loads(marks_file.read_text())
    manifest = json.loads(stdout)["manifest"]
    shutil.rmtree(cache, ignore_errors=True)
    phases = {"startup": {"wall_s": marks["first_phase"] - start}}
    phases["cache_lookup"] = {"wall_s": manifest["compile_phases"]["cache_lookup"]}
    phases.update(marks["phases"])
    phases["exit"] = {"wall_s": end - marks["last_phase"]}
    return {
        "phases": {k: {m: round(v, 2) for m, v in row.items()} for k, row in phases.items()},
        "wall_s": round(end - start, 2),
        "cpu_s": round(cpu, 2),
        "max_rss_gib": round(marks["max_rss_gib"], 2),
        "graph_hash": manifest["graph"]["graph_hash"],
        "cubins": len(manifest.get("cubins", [])),
    }


def main() -> int:
    if sys.argv[1:2] == ["child"]:
        child(Path(sys.argv[2]), sys.argv[3:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["llama3-8b"])
    p.add_argument("--target", default="h200")
    p.add_argument("--max-num-batched-tokens", type=int, default=2048)
    p.add_argument("--before", default=None, help="a git revision to run beside the tree")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.plan_carry import shape_only_checkpoint

    work = Path(tempfile.mkdtemp(prefix="kiln-phases-work-"))
    trees = {"after": ROOT}
    if args.before:
        trees = {"before": export_tree(args.before, work / "before"), **trees}
    result = {"target": args.target, "before": args.before, "host": os.uname().nodename,
              "cpus": os.cpu_count(), "runs": []}  # fmt: skip
    for shape in args.shapes:
        ckpt = shape_only_checkpoint(work / "ckpt" / shape, shape)
        for i in range(args.runs):
            for label, tree in trees.items():
                run = run_once(tree, ckpt, args.target, args.max_num_batched_tokens)
                result["runs"].append({"shape": shape, "tree": label, "run": i, **run})
                print(json.dumps(result["runs"][-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
