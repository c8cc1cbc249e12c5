"""Start-up time of `kiln serve MODEL` in fresh processes: exec -> /health 200 -> first completion.

The parent execs the server on a free loopback port, polls `/health` every 5 ms, sends one
completion (`max_tokens` 1) as soon as it answers 200, then stops the server. The server (with
KILN_STARTUP_REPORT set) writes wall-clock marks of its own process and of its engine core,
with the core's load phases and weight-stream figures. Together they split exec -> first
completion into phases that add up to it:

    api_start           exec to the server's first Kiln line (interpreter start)
    api_to_spawn        its imports and flag parsing, to the engine core's spawn
    core_start          the core's start (a fork; a fresh interpreter when spawned), to its
                        first Kiln line
    core_imports        torch and the engine's modules (the weights stream meanwhile)
    <load phases>       manifest, tokenizer, weights, weights_wait, kernels, ... (the core's;
                        its step CUDA graphs are captured after ready, not in here)
    core_load_other     the rest of the core's engine build
    ready_to_listening  the core's ready message, the app built, the socket bound
    listening_to_health the first /health 200 the parent saw (5 ms polls)
    first_completion    one completion of one token, request to response

Beside the wall clock, each run keeps the CPU seconds (user + system) the server process and
its children (the engine core; a spawned core's resource tracker) had used by the first
completion (Linux): on a shared machine they move far less with the load than the phases do.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kiln.benchmarking.startup import StartupRun, read_json_report, relative_weights
from kiln.errors import KilnError

POLL_S = 0.005


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(model: str, port: int, engine_argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "kiln", "serve", model, "--port", str(port),
            "--log-level", "warning", *engine_argv]  # fmt: skip


def run_serve_once(
    model: str, engine_argv: list[str], report: Path, timeout_s: float
) -> StartupRun:
    """Exec one server, time it to its first completion, stop it, split the time."""
    port = free_port()
    env = dict(os.environ, KILN_STARTUP_REPORT=str(report))
    report.unlink(missing_ok=True)
    log = report.with_suffix(".log")
    with open(log, "w") as out:
        t_exec = time.time()
        proc = subprocess.Popen(serve_command(model, port, engine_argv), stdout=out,
                                stderr=subprocess.STDOUT, env=env)  # fmt: skip
        try:
            t_health = _wait_healthy(proc, port, t_exec + timeout_s, log)
            _complete_one(port)
            t_first = time.time()
            cpu = cpu_seconds(proc.pid)
        finally:
            _stop(proc)
    data = read_json_report(report)
    phases = split_serve_phases(data, t_exec, t_health, t_first)
    weights = relative_weights(data["core"].get("weights", {}), t_exec)
    return StartupRun(t_first - t_exec, phases, weights, ready=t_health - t_exec, cpu=cpu)


def cpu_seconds(pid: int) -> dict[str, float]:
    """{"server": CPU seconds of process `pid`, "core": those of all its descendants}, from
    /proc (user + system); {} where /proc cannot tell (not Linux, a process gone)."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        server, *children = _tree(pid)
        return {"server": _cpu_ticks(server) / tick,
                "core": sum(_cpu_ticks(c) for c in children) / tick}  # fmt: skip
    except (OSError, ValueError, IndexError):
        return {}


def _tree(pid: int) -> list[int]:
    """`pid`, then its descendants."""
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(p for kid in kids for p in _tree(int(kid)))]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def _wait_healthy(proc: subprocess.Popen, port: int, deadline: float, log: Path) -> float:
    while time.time() < deadline:
        if proc.poll() is not None:
            tail = " | ".join(log.read_text().strip().splitlines()[-5:])
            raise KilnError(f"kiln serve exited {proc.returncode} before /health answered: {tail}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return time.time()
        except OSError:
            pass  # not listening yet
        time.sleep(POLL_S)
    raise KilnError("kiln serve did not answer /health with 200 in time (see --timeout)")


def _complete_one(port: int) -> None:
    body = json.dumps({"prompt": "hi", "max_tokens": 1, "temperature": 0.0})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read().decode(errors="replace")
    conn.close()
    if resp.status != 200 or not json.loads(text).get("choices"):
        raise KilnError(f"the first completion failed: HTTP {resp.status}: {text[:300]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def split_serve_phases(
    data: dict, t_exec: float, t_health: float, t_first: float
) -> dict[str, float]:
    """Phases that sum to exec -> first completion (gaps clamped at 0 against clock jitter)."""
    api, core = data["marks"], data["core"]
    cm, load = core["marks"], dict(core["phases"])
    phases = {
        "api_start": api["t_process_start"] - t_exec,
        "api_to_spawn": api["t_core_spawn"] - api["t_process_start"],
        "core_start": cm["t_process_start"] - api["t_core_spawn"],
        "core_imports": cm["t_load_start"] - cm["t_process_start"],
        **load,
        "core_load_other": (cm["t_ready"] - cm["t_load_start"]) - sum(load.values()),
        "ready_to_listening": api["t_listening"] - cm["t_ready"],
        "listening_to_health": t_health - api["t_listening"],
        "first_completion": t_first - t_health,
    }
    return {k: max(v, 0.0) for k, v in phases.items()}


def bench_serve_startup(
    model: str, engine_argv: list[str], runs: int, timeout_s: float = 600.0, progress=None
) -> list[StartupRun]:
    """`runs` fresh servers, one after the other."""
    if runs < 1:
        raise KilnError(f"--runs={runs} must be >= 1")
    out = []
    with tempfile.TemporaryDirectory(prefix="kiln-serve-startup-") as tmp:
        for i in range(runs):
            out.append(
                run_serve_once(model, engine_argv, Path(tmp) / f"report-{i}.json", timeout_s)
            )
            if progress is not None:
                progress.update(1)
    return out
