"""benchmarks/decode_step_time.py on the CPU: every decode step of each batch is recorded,
each wrapped phase fired once, and none is counted twice (the remainder stays >= 0)."""

from __future__ import annotations

import dataclasses
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


def test_the_wraps_are_undone():
    import runtime.engine as engine_mod
    import runtime.model_runner as runner_mod
    from benchmarks.fp8_quality import engine_config
    from kiln.resolve import build_engine

    engine = build_engine(dataclasses.replace(engine_config("demo", None), compile="never"))
    before = (runner_mod.prepare_inputs, engine_mod.sample)
    steps = decode_step_time.decode_steps(engine, 2, 3, engine.loaded.vocab_size, seed=0)
    assert len(steps) == 3
    assert (runner_mod.prepare_inputs, engine_mod.sample) == before
    for obj, name in ((engine.scheduler, "schedule"), (engine.scheduler, "update"),
                      (engine.loaded.runner, "execute")):  # fmt: skip
        assert name not in vars(obj), name  # the class's own method again
