"""`kiln bench`: throughput vs HF, start-up phases, dashboard records and `--record` imports."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from kiln.benchmarking.startup import StartupRun, median_phases, split_phases
from kiln.benchmarking.stats import format_table, percentile
from kiln.benchmarking.throughput import BatchTimings
from kiln.benchmarking.workload import Workload, parse_batch_sizes
from kiln.cli import main
from kiln.commands.bench import engine_argv
from kiln.commands.generate import add_engine_arguments
from kiln.errors import KilnError
from perf_dashboard.store import DashboardStore

LATENCY_KEYS = ("tok_s", "ttft_p50_ms", "itl_p50_ms")


@pytest.fixture
def db(tmp_path, monkeypatch):
    path = tmp_path / "dash.sqlite"
    monkeypatch.setenv("KILN_DASHBOARD_DB", str(path))
    return path


def _table_rows(out: str) -> list[list[str]]:
    lines = [line.split() for line in out.splitlines() if line.strip()]
    return lines[2:]  # header, rule


def test_throughput_vs_hf_prints_rows_writes_json_and_records(db, tmp_path, capsys):
    json_out = tmp_path / "bench.json"
    argv = ["bench", "throughput", "demo", "--batch-sizes", "1,2", "--input-len", "8",
            "--output-len", "4", "--vs", "hf", "--json-out", str(json_out)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "tok/s" in out and "TTFT p50 ms" in out and "ITL p99 ms" in out
    printed = {(int(r[0]), r[1]): r for r in _table_rows(out)}
    assert set(printed) == {(1, "kiln"), (1, "hf"), (2, "kiln"), (2, "hf")}
    assert all(printed[(b, "kiln")][5].endswith("x") for b in (1, 2))  # ratio vs hf
    record = json.loads(json_out.read_text())
    assert record["kind"] == "bench" and record["bench"] == "throughput"
    assert record["model"] == "demo" and record["card"].startswith("cpu (")
    for row in record["results"]:
        assert (row["input_len"], row["output_len"]) == (8, 4)
        assert all(row[k] > 0 for k in LATENCY_KEYS), row
        if row["engine"] == "kiln":
            assert row["ttft_p99_ms"] >= row["ttft_p50_ms"] > 0
            assert row["itl_p99_ms"] >= row["itl_p50_ms"] > 0
    stored = DashboardStore(db).benches()
    assert len(stored) == 1 and stored[0].to_dict()["results"] == record["results"]


def test_startup_reports_phases_that_add_up(db, tmp_path, capsys):
    json_out = tmp_path / "startup.json"
    assert main(["bench", "startup", "demo", "--runs", "2", "--json-out", str(json_out)]) == 0
    out = capsys.readouterr().out
    names = [r[0] for r in _table_rows(out)]
    for phase in ("interpreter", "imports", "tokenizer", "weights", "kv_alloc", "first_token"):
        assert phase in names
    startup = json.loads(json_out.read_text())["startup"]
    assert startup["imports"] > 0 and startup["weights"] > 0 and startup["first_token"] > 0
    assert all(v >= 0 for v in startup.values())
    total = float(next(r for r in _table_rows(out) if r[0] == "total")[-2])
    assert sum(startup.values()) == pytest.approx(total, rel=0.25)
    stored = DashboardStore(db).benches()
    assert [r.bench for r in stored] == ["startup"] and stored[0].startup == startup
    runs = json.loads(json_out.read_text())["startup_runs"]
    assert len(runs) == 2 and list(stored[0].startup_runs) == runs
    for phase, median_s in startup.items():  # the median of two runs is their mean
        assert median_s == pytest.approx(sum(r.get(phase, 0.0) for r in runs) / 2)
    each = re.search(r"each run: ([\d. ]+)\)", out).group(1).split()
    assert len(each) == 2


def test_generate_writes_the_startup_report(tmp_path, monkeypatch, capsys):
    report = tmp_path / "report.json"
    monkeypatch.setenv("KILN_STARTUP_REPORT", str(report))
    assert main(["generate", "demo", "--prompt", "hi", "--max-tokens", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["token_ids"]) == 1
    data = json.loads(report.read_text())
    assert {"imports", "tokenizer", "weights", "kv_alloc"} <= set(data["phases"])
    assert all(v >= 0 for v in data["phases"].values()) and data["phases"]["imports"] > 0
    marks = [data[k] for k in ("t_process_start", "t_load_start", "t_ready", "t_first_token")]
    assert marks == sorted(marks) and marks[-1] - marks[0] < 600


def test_record_imports_a_file_and_rejects_a_malformed_one(db, tmp_path, capsys):
    good = tmp_path / "good.json"
    row = {"engine": "kiln", "batch_size": 4, "input_len": 16, "output_len": 8, "tok_s": 123.5}
    good.write_text(json.dumps({"kind": "bench", "bench": "throughput", "model": "m",
                                "card": "NVIDIA H200", "results": [row], "host": "gpu-1",
                                "created": 1790000000.0}))  # fmt: skip
    assert main(["bench", "--record", str(good)]) == 0
    assert [r.card for r in DashboardStore(db).benches()] == ["NVIDIA H200"]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "bench", "bench": "throughput", "card": "x",
                               "results": [row]}))  # fmt: skip
    capsys.readouterr()
    assert main(["bench", "--record", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "field 'model' is missing" in err
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["bench", "--record", str(tmp_path / "junk.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert len(DashboardStore(db).benches()) == 1  # nothing half-imported


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench"], "choose a benchmark"),
        (["bench", "throughput", "--batch-sizes", "1,x"], "comma-separated integers"),
        (["bench", "throughput", "--batch-sizes", "0"], "integers >= 1"),
        (["bench", "throughput", "--output-len", "0"], "output_len=0 must be >= 1"),
        (["bench", "startup", "/no/such/model"], "not a checkpoint folder"),
        (["bench", "startup", "--runs", "0"], "--runs=0 must be >= 1"),
        (["bench", "--record", "/no/such.json"], "cannot read record file"),
    ],
)
def test_user_errors_exit_2_with_a_message(argv, message, db, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_percentile_interpolates_and_handles_empty():
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0, 1.0], 99) == pytest.approx(4.96)
    assert percentile([7.5], 99) == 7.5 and percentile([], 50) is None


def test_batch_timings_ttft_and_itl():
    t = BatchTimings(start=10.0, end=10.9, arrival={"a": 10.0, "b": 10.1},
                     stamps={"a": [10.3, 10.5, 10.9], "b": [10.4, 10.9]})  # fmt: skip
    assert t.num_tokens == 5
    assert sorted(t.ttfts()) == pytest.approx([0.3, 0.3])
    assert sorted(t.itls()) == pytest.approx([0.2, 0.4, 0.5])


def test_workload_prompts_are_seeded_and_warmup_differs():
    w = Workload((1, 3), input_len=5, output_len=2, seed=11)
    first, again = w.prompts(3, 1000), w.prompts(3, 1000)
    assert first == again and len(first) == 3 and all(len(p) == 5 for p in first)
    assert len({tuple(p) for p in first}) == 3
    warm = w.warmup_prompts(1000)
    assert len(warm) == 3 and not {tuple(p) for p in warm} & {tuple(p) for p in first}
    assert parse_batch_sizes("1, 8,32") == (1, 8, 32)
    with pytest.raises(KilnError, match="input_len=0"):
        Workload((1,), input_len=0, output_len=1)


def test_split_phases_sum_to_total_and_medians():
    report = {"phases": {"imports": 1.0, "weights": 0.5}, "t_process_start": 100.2,
              "t_ready": 101.9, "t_first_token": 102.3}  # fmt: skip
    phases = split_phases(report, t_spawn=100.0, total=2.5)
    assert phases == pytest.approx({"interpreter": 0.2, "imports": 1.0, "weights": 0.5,
                                    "load_other": 0.2, "first_token": 0.4, "exit": 0.2})  # fmt: skip
    runs = [StartupRun(1.0, {"a": 1.0, "b": 2.0}), StartupRun(1.0, {"a": 3.0}),
            StartupRun(1.0, {"a": 2.0, "b": 4.0})]  # fmt: skip
    assert median_phases(runs) == {"a": 2.0, "b": 2.0}


def test_engine_argv_round_trips_non_default_flags():
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(["--max-num-seqs", "8", "--enforce-eager", "--kv-cache-memory", "64M"])
    words = engine_argv(args)
    assert words == ["--max-num-seqs", "8", "--kv-cache-memory", str(64 * 2**20), "--enforce-eager"]
    assert parser.parse_args(words) == args


def test_format_table_aligns_and_shows_missing_as_dash():
    text = format_table(["a", "bb"], [[1, None], [2.5, 1234.5]])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1 and lines[2].split() == ["1", "-"]
    assert lines[3].split() == ["2.50", "1234"]


def test_ready_time_leaves_out_first_token_exit_and_the_named_phases():
    from kiln.benchmarking.startup import ready_seconds

    run = StartupRun(
        10.0, {"imports": 1.0, "weights": 3.0, "kv_alloc": 0.5, "first_token": 0.2, "exit": 5.3}
    )
    assert ready_seconds(run) == 4.5
    assert ready_seconds(run, without=("weights",)) == 1.5
