"""kiln/startup.py: the cyclic collector pauses while `kiln generate`/`serve` build the engine,
then what start-up made is frozen out of later collections; `kiln compile` runs without it."""

from __future__ import annotations

import gc

import pytest

import kiln.errors
import kiln.llm
from kiln import startup
from kiln.cli import main


@pytest.fixture
def collector_seen_by_engine_build(monkeypatch):
    """Records gc.isenabled() while the engine is built; restores the collector afterwards."""
    seen: list[bool] = []
    real_init = kiln.llm.LLM.__init__

    def init(self, *args, **kwargs):
        seen.append(gc.isenabled())
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(kiln.llm.LLM, "__init__", init)
    gc.unfreeze()  # in case an earlier in-process command froze the test process
    assert gc.isenabled() and gc.get_freeze_count() == 0
    yield seen
    gc.unfreeze()
    gc.enable()


def test_generate_builds_its_engine_without_collections_then_freezes(
    collector_seen_by_engine_build, capsys
):
    assert main(["generate", "demo", "--prompt", "hi", "--max-tokens", "1", "--device", "cpu"]) == 0
    assert collector_seen_by_engine_build == [False]
    assert gc.isenabled()
    assert gc.get_freeze_count() > 1000  # the torch and model objects


def test_pause_can_be_turned_off(collector_seen_by_engine_build, monkeypatch, capsys):
    monkeypatch.setenv("KILN_STARTUP_GC_PAUSE", "0")
    assert main(["generate", "demo", "--prompt", "hi", "--max-tokens", "1", "--device", "cpu"]) == 0
    assert collector_seen_by_engine_build == [True]
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_failed_start_turns_the_collector_back_on(
    collector_seen_by_engine_build, tmp_path, capsys
):
    missing = tmp_path / "no-such-model"
    assert main(["generate", str(missing), "--prompt", "hi", "--device", "cpu"]) != 0
    assert "no-such-model" in capsys.readouterr().err
    assert collector_seen_by_engine_build == [False]
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_compile_runs_without_collections(monkeypatch, tmp_path):
    import lowering.compile

    seen = []

    def compile_model(options, progress=None):
        seen.append(gc.isenabled())
        raise kiln.errors.KilnError("stopped here")

    monkeypatch.setattr(lowering.compile, "compile_model", compile_model)
    assert gc.isenabled()
    assert main(["compile", "demo", "--target", "cpu", "--no-record"]) == 2
    assert seen == [False] and gc.isenabled()


def test_a_caller_that_turned_the_collector_off_keeps_it_off(collector_seen_by_engine_build):
    from kiln import startup

    gc.disable()
    startup.pause_gc()
    startup.resume_gc()
    assert not gc.isenabled() and gc.get_freeze_count() == 0


def test_start_up_leaves_no_tensor_in_a_reference_cycle():
    """What start-up leaves in reference cycles is frozen with the rest, never collected: it
    must hold no tensor (measured on the demo: ~8k small objects, functions and tuples)."""
    import subprocess
    import sys

    code = """
import gc
gc.disable()
from kiln.llm import LLM
import torch
llm = LLM("demo", device="cpu")
gc.set_debug(gc.DEBUG_SAVEALL)
gc.collect()
print(sum(isinstance(o, torch.Tensor) for o in gc.garbage), len(gc.garbage))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    tensors, garbage = map(int, proc.stdout.split())
    assert tensors == 0, (
        f"{tensors} of {garbage} objects in start-up's reference cycles are tensors"
    )


def test_serving_processes_collect_less_often_unless_the_pause_is_off(monkeypatch):
    before = gc.get_threshold()
    try:
        startup.serve_gc()
        assert gc.get_threshold() == startup.SERVE_GC_THRESHOLD
        assert startup.SERVE_GC_THRESHOLD[0] > before[0]
        gc.set_threshold(*before)
        monkeypatch.setenv("KILN_STARTUP_GC_PAUSE", "0")
        startup.serve_gc()
        assert gc.get_threshold() == before
    finally:
        gc.set_threshold(*before)
