"""benchmarks/decode_step_time.py on the CPU: every decode step of each batch is recorded,
each wrapped phase fired once, and none is counted twice (the remainder stays >= 0)."""

from __future__ import annotations

import json

from benchmarks import decode_step_time


def test_records_each_decode_step_and_times_every_phase_once(tmp_path):
    out = tmp_path / "r.json"
    decode_step_time.main(
        ["demo", "--batch-sizes", "1,3", "--steps", "4", "--compile", "never", "--out", str(out)]
    )
    result = json.loads(out.read_text())
    assert set(result["medians"]) == {"1", "3"}
    for steps in result["steps"].values():
        assert len(steps) == 4  # the prefill steps are not decode steps
        for s in steps:
            assert all(s[p] > 0 for p in decode_step_time.PHASES if p != "rest"), s
            assert s["rest"] >= 0, s  # prepare is inside execute: subtracted, not added twice
            assert "device" not in s  # no GPU: no device time
