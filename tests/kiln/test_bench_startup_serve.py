"""`kiln bench startup --serve`: exec -> /health -> first completion, split into phases that
add up; the weight stream's figures in the start-up reports."""

from __future__ import annotations

import json

import pytest

from kiln.benchmarking.serve_startup import split_serve_phases
from kiln.benchmarking.startup import relative_weights
from kiln.cli import main
from perf_dashboard.store import DashboardStore


def test_serve_startup_splits_exec_to_first_completion(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KILN_DASHBOARD_DB", str(tmp_path / "dash.sqlite"))
    json_out = tmp_path / "serve-startup.json"
    argv = ["bench", "startup", "demo", "--serve", "--runs", "1", "--compile", "never",
            "--json-out", str(json_out)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    record = json.loads(json_out.read_text())
    phases = record["startup"]
    for name in ("api_start", "core_start", "core_imports", "weights", "weights_wait",
                 "ready_to_listening", "first_completion"):  # fmt: skip
        assert name in phases
    assert all(v >= 0 for v in phases.values()) and phases["core_imports"] > 0
    first = float(out.split("exec -> first completion ")[1].split()[0])
    assert sum(phases.values()) == pytest.approx(first, abs=0.02)
    w = record["weight_stream"]
    assert w["streamed"] == 1.0 and w["bytes"] > 0 and 0 < w["start_s"] < w["done_s"] < first
    assert "streamed on" in out
    cpu = record["startup_cpu"]  # the core imported torch and built the engine: the most
    assert 0 < cpu["server"] < cpu["core"] and "cpu by the first completion: server" in out
    stored = DashboardStore(tmp_path / "dash.sqlite").benches()
    assert [r.bench for r in stored] == ["serve_startup"] and stored[0].weight_stream == w
    assert stored[0].startup_cpu == cpu


def test_split_clamps_clock_jitter_and_keeps_the_core_phases():
    data = {
        "marks": {"t_process_start": 100.1, "t_core_spawn": 100.3, "t_core_ready": 102.0,
                  "t_listening": 102.05},
        "core": {"phases": {"weights": 0.2, "graph_capture": 0.1},
                 "marks": {"t_process_start": 100.5, "t_load_start": 101.4, "t_ready": 101.99}},
    }  # fmt: skip
    phases = split_serve_phases(data, t_exec=100.0, t_health=102.04, t_first=102.1)
    assert phases["core_imports"] == pytest.approx(0.9)
    assert phases["core_load_other"] == pytest.approx(0.29)
    assert phases["listening_to_health"] == 0.0  # the poll saw 200 "before" the mark: jitter
    assert list(phases)[4:6] == ["weights", "graph_capture"]


def test_weight_figures_are_made_relative_to_exec():
    figures = {"bytes": 10.0, "start_wall": 50.25, "done_wall": 51.0, "note": "x"}
    assert relative_weights(figures, 50.0) == {"bytes": 10.0, "start_s": 0.25, "done_s": 1.0}
    assert relative_weights("junk", 50.0) == {}


def test_generate_reports_the_weight_stream(tmp_path, monkeypatch, capsys):
    report = tmp_path / "report.json"
    monkeypatch.setenv("KILN_STARTUP_REPORT", str(report))
    assert main(["generate", "demo", "--prompt", "hi", "--max-tokens", "1", "--compile",
                 "never"]) == 0  # fmt: skip
    data = json.loads(report.read_text())
    w = data["weights"]
    assert w["streamed"] == 1.0 and w["bytes"] > 0 and w["copy_s"] >= 0
    assert data["t_process_start"] <= w["start_wall"] <= w["done_wall"] <= data["t_ready"]
    assert "weights_wait" in data["phases"]


def test_the_api_server_process_imports_no_torch():
    """`kiln serve`'s own process spawns the core, then imports the server: torch (1 s or more)
    and the model code are the core's alone."""
    import subprocess
    import sys

    code = (
        "import sys; from kiln.cli import build_parser; build_parser(); "
        "from kiln.commands import serve; import runtime.engine_core, server.app, "
        "server.core_client, server.runner; "
        "heavy = [m for m in ('torch', 'model_defs.decoder', 'transformers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1000:]
