"""Start-up time of `kiln generate MODEL --max-tokens 1` in fresh processes, phase by phase.

The parent times spawn to exit; the child (with KILN_STARTUP_REPORT set) writes wall-clock
marks and its load phases. Together they split the total into phases that add up to it:
interpreter (spawn to Kiln's first line), imports, the engine's load phases (tokenizer,
weights, compile, kv_alloc, ...), load_other (the rest of engine construction), first_token,
and exit (printing and interpreter teardown).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kiln.benchmarking.stats import median
from kiln.errors import KilnError

REPORT_MARKS = ("t_process_start", "t_ready", "t_first_token")


@dataclass(frozen=True)
class StartupRun:
    """One child process: its wall time (s), the phases that split it (s, in order), the
    weight stream's figures (`start_s`/`done_s`: seconds after exec), and for a server the
    seconds from exec to its first /health 200 and the CPU seconds its processes had used by
    the first completion (`server`, `core`)."""

    total: float
    phases: dict[str, float]
    weights: dict[str, float] = field(default_factory=dict)
    ready: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)


def child_command(model: str, engine_argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "kiln", "generate", model, "--prompt", "hi",
            "--max-tokens", "1", "--json", *engine_argv]  # fmt: skip


def run_once(model: str, engine_argv: list[str], report: Path, timeout_s: float) -> StartupRun:
    """Spawn one child, wait for it, and split its wall time into phases."""
    env = dict(os.environ, KILN_STARTUP_REPORT=str(report))
    report.unlink(missing_ok=True)
    t_spawn, t0 = time.time(), time.perf_counter()
    try:
        proc = subprocess.run(child_command(model, engine_argv), capture_output=True, text=True,
                              env=env, timeout=timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise KilnError(f"kiln generate did not finish within {timeout_s:.0f} s") from None
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-5:]
        raise KilnError(f"kiln generate exited {proc.returncode}: " + " | ".join(tail))
    data = read_report(report)
    weights = relative_weights(data.get("weights", {}), t_spawn)
    return StartupRun(total, split_phases(data, t_spawn, total), weights)


def read_json_report(path: Path) -> dict:
    """A child's start-up report (a JSON object), or a KilnError saying why not."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise KilnError(f"the child wrote no readable start-up report at {path}: {e}") from None
    if not isinstance(data, dict):
        raise KilnError(f"start-up report {path} is not a JSON object")
    return data


def relative_weights(figures: dict, t_exec: float) -> dict[str, float]:
    """Weight figures with their wall-clock `start_wall`/`done_wall` as `start_s`/`done_s`,
    seconds after the process was executed."""
    if not isinstance(figures, dict):
        return {}
    out = {k: float(v) for k, v in figures.items() if not k.endswith("_wall") and _is_number(v)}
    for name in ("start", "done"):
        if _is_number(figures.get(f"{name}_wall")):
            out[f"{name}_s"] = figures[f"{name}_wall"] - t_exec
    return out


def read_report(path: Path) -> dict:
    """The child's report, checked: a dict of phase seconds plus the wall-clock marks."""
    data = read_json_report(path)
    phases = data.get("phases")
    if not isinstance(phases, dict) or not all(_is_number(v) for v in phases.values()):
        raise KilnError(f"start-up report {path}: 'phases' must map names to seconds")
    missing = [k for k in REPORT_MARKS if not _is_number(data.get(k))]
    if missing:
        raise KilnError(f"start-up report {path}: missing wall-clock marks {missing}")
    return data


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def split_phases(report: dict, t_spawn: float, total: float) -> dict[str, float]:
    """Phases that sum to `total` (gaps are clamped at 0 against clock jitter)."""
    child = dict(report["phases"])
    t_start, t_ready, t_first = (report[k] for k in REPORT_MARKS)
    phases = {"interpreter": max(t_start - t_spawn, 0.0), **child}
    phases["load_other"] = max((t_ready - t_start) - sum(child.values()), 0.0)
    phases["first_token"] = max(t_first - t_ready, 0.0)
    phases["exit"] = max(total - sum(phases.values()), 0.0)
    return phases


def bench_startup(
    model: str, engine_argv: list[str], runs: int, timeout_s: float = 600.0, progress=None
) -> list[StartupRun]:
    """`runs` fresh children, one after the other."""
    if runs < 1:
        raise KilnError(f"--runs={runs} must be >= 1")
    out = []
    with tempfile.TemporaryDirectory(prefix="kiln-startup-") as tmp:
        for i in range(runs):
            out.append(run_once(model, engine_argv, Path(tmp) / f"report-{i}.json", timeout_s))
            if progress is not None:
                progress.update(1)
    return out


def median_phases(runs: list[StartupRun]) -> dict[str, float]:
    """Median of each phase over the runs (a phase missing from a run counts as 0)."""
    names: list[str] = []
    for r in runs:
        names += [n for n in r.phases if n not in names]
    return {n: median([r.phases.get(n, 0.0) for r in runs]) for n in names}


def median_weights(runs: list[StartupRun]) -> dict[str, float]:
    """Median of each weight-stream figure over the runs that report it."""
    names: list[str] = []
    for r in runs:
        names += [n for n in r.weights if n not in names]
    return {n: median([r.weights[n] for r in runs if n in r.weights]) for n in names}


def ready_seconds(run: StartupRun, *, without: tuple[str, ...] = ()) -> float:
    """Process start to ready (first token and exit left out), less the phases in `without`."""
    skip = ("first_token", "exit", "first_completion", *without)
    return sum(s for name, s in run.phases.items() if name not in skip)
