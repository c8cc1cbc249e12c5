"""A small run of `benchmarks/load_test.py` against the shared server: zero errors."""

from __future__ import annotations

import json

import pytest

from benchmarks import load_test
from tests.server.conftest import API_KEY

pytestmark = pytest.mark.timeout(300)


def test_load_test_small_run_has_no_errors(served, tmp_path, capsys):
    out = tmp_path / "load.json"
    code = load_test.main(
        [
            "--url",
            served.url,
            "--api-key",
            API_KEY,
            "--clients",
            "8",
            "--requests",
            "3",
            "--max-tokens",
            "6",
            "--time-limit",
            "120",
            "--seed",
            "7",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    record = json.loads(out.read_text())
    row = record["results"][0]
    assert record["kind"] == "bench" and row["batch_size"] == 8 and row["tok_s"] > 0
    assert row["input_len"] > 0
    assert 0 < row["ttft_p50_ms"] <= row["ttft_p99_ms"]
    assert 0 < row["itl_p50_ms"] <= row["itl_p99_ms"]
    assert "errors  0" in printed
    from perf_dashboard.records import record_from_dict

    record_from_dict(record)  # the dashboard accepts it
