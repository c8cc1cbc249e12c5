"""The settings registry: every KILN_* variable in the source is declared once, typed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kiln import env
from kiln.cli import main
from kiln.errors import KilnError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kiln", "ir", "model_defs", "passes", "lowering", "compile_cache", "runtime",
            "scheduler", "server", "perf_dashboard", "benchmarks")  # fmt: skip


def test_every_kiln_variable_in_the_source_is_registered():
    named = set()
    for package in PACKAGES:
        for f in (ROOT / package).rglob("*.py"):
            named |= set(re.findall(r"\bKILN_[A-Z_]+[A-Z]\b", f.read_text()))
    assert named and named <= set(env.SETTINGS), sorted(named - set(env.SETTINGS))


def test_only_kiln_env_reads_kiln_variables():
    for package in PACKAGES:
        for f in (ROOT / package).rglob("*.py"):
            if f == ROOT / "kiln" / "env.py":
                continue
            text = f.read_text()
            assert not re.search(r"environ(\.get)?\(?\[?[\"']KILN_", text), f
            assert "getenv(" not in text, f


@pytest.mark.parametrize(
    "value, expected", [("0", False), ("off", False), ("1", True), ("TRUE", True), ("", True)]
)
def test_flag_settings_parse(monkeypatch, value, expected):
    monkeypatch.setenv("KILN_BLAS_PREWARM", value)
    assert env.blas_prewarm_enabled() is expected


def test_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("KILN_CUDA_PREWARM", "maybe")
    with pytest.raises(KilnError, match="KILN_CUDA_PREWARM='maybe': use 1"):
        env.cuda_prewarm_enabled()
    monkeypatch.setenv("KILN_GPU_LOWERING", "fast")
    with pytest.raises(KilnError, match="KILN_GPU_LOWERING='fast': choose one of aoti, jit"):
        env.gpu_lowering()


def test_paths_expand_and_default(monkeypatch, tmp_path):
    monkeypatch.delenv("KILN_DASHBOARD_DB", raising=False)
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    assert env.dashboard_db() == tmp_path / "dashboard.sqlite"
    monkeypatch.setenv("KILN_DUMP_GRAPHS", "~/dumps")
    assert env.dump_graphs_dir() == Path.home() / "dumps"


def test_kiln_env_lists_every_setting_with_its_value(monkeypatch, capsys):
    import json

    monkeypatch.setenv("KILN_BLAS_PREWARM", "0")
    assert main(["env", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == set(env.SETTINGS)
    assert rows["KILN_BLAS_PREWARM"] == {
        "name": "KILN_BLAS_PREWARM", "type": "flag", "default": "1", "value": "0", "set": True,
        "help": env.SETTINGS["KILN_BLAS_PREWARM"].help,
    }  # fmt: skip
    monkeypatch.setenv("KILN_BLAS_PREWARM", "sometimes")
    assert main(["env"]) == 2
    assert "KILN_BLAS_PREWARM='sometimes'" in capsys.readouterr().err
