"""Pass registry and contract, pipeline order, --passes toggles, CompileTrace, graph dumps,
missed fusions and pass interactions. Pass lists come from the registry, never by hand."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from pass_checks import passed

import passes
from kiln.errors import KilnError
from passes.base import Pass
from passes.capture import capture
from passes.compile import compile_graph, context_for
from passes.config import PassConfig
from passes.fuse_add_rms_norm import FuseAddRMSNorm
from passes.manager import PassManager
from passes.pipeline import (
    MACHINERY,
    PHASES,
    default_pipeline,
    parse_toggles,
    pass_names,
    registered_passes,
)

TESTS = Path(__file__).parent


def test_pipeline_is_in_phase_order_then_name_order():
    order = [(PHASES.index(p.phase), p.name) for p in default_pipeline()]
    assert order == sorted(order) and len(set(pass_names())) == len(order)
    assert pass_names()[0] == "eliminate_noops" and pass_names()[-1] == "pad_for_kernels"


def test_every_pass_class_in_passes_is_registered():
    registered = set(registered_passes())
    for module in pkgutil.iter_modules(passes.__path__):
        if module.name in MACHINERY:
            continue
        mod = importlib.import_module(f"passes.{module.name}")
        classes = [
            c for _, c in inspect.getmembers(mod, inspect.isclass)
            if issubclass(c, Pass) and c.__module__ == mod.__name__ and hasattr(c, "name")
        ]  # fmt: skip
        assert classes, f"passes/{module.name}.py defines no pass (helpers: add to MACHINERY)"
        for cls in classes:
            assert cls in registered, f"{cls.__name__}: decorate it with @register_pass"


@pytest.mark.parametrize("name", pass_names())
def test_every_pass_has_a_test(name):
    cls = next(c for c in registered_passes() if c.name == name)
    tested = [f.name for f in TESTS.glob("test_*.py") if cls.__name__ in f.read_text()]
    assert tested, f"{cls.__name__} is used by no test: add tests/passes/test_{name}.py"


def test_uuids_are_stable_and_distinct():
    first = [p.uuid() for p in default_pipeline()]
    assert first == [p.uuid() for p in default_pipeline()]
    assert len(set(first)) == len(first) and all(len(u) == 16 for u in first)


def test_toggles():
    none = PassConfig(toggles=parse_toggles("none"), quantization="fp8", tp_size=2)
    on = {p.name for p in default_pipeline() if p.enabled(none)}
    assert on == {"quantize_fp8"}  # required by --quantization fp8, not optional
    some = PassConfig(toggles=parse_toggles("none,+fuse_add_rms_norm"))
    assert {p.name for p in default_pipeline() if p.enabled(some)} == {"fuse_add_rms_norm"}
    minus = PassConfig(toggles=parse_toggles("-fuse_add_rms_norm,-pad_for_kernels"))
    on = {p.name for p in default_pipeline() if p.enabled(minus)}
    defaults = {p.name for p in default_pipeline() if p.enabled(PassConfig())}
    assert on == defaults - {"fuse_add_rms_norm", "pad_for_kernels"} and "eliminate_noops" in on
    assert parse_toggles("+x_off,-x_off".replace("x_off", "eliminate_noops")).off == {
        "eliminate_noops"
    }


def test_unknown_pass_lists_valid_ones():
    with pytest.raises(KilnError, match="unknown pass 'fuse_magic'.*fuse_attn_quant"):
        parse_toggles("-fuse_magic")
    with pytest.raises(KilnError, match="cannot be off"):
        parse_toggles("-quantize_fp8")


def test_trace_records_each_pass(qwen3):
    _, trace = compile_graph(qwen3)
    assert [r.name for r in trace.passes] == pass_names()
    records = {r.name: r for r in trace.passes}
    fused = records["fuse_add_rms_norm"]
    assert fused.enabled and fused.rewrites == 4 and fused.wall_s > 0
    assert fused.nodes_after != fused.nodes_before
    assert not records["quantize_fp8"].enabled  # without --quantization
    assert trace.op_counts_after["kiln.fused_add_rms_norm"] == 4
    assert len(trace.graph_hash) == 64 and "fuse_add_rms_norm" in trace.table()


def test_dump_graphs_writes_before_and_after(llama, tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_DUMP_GRAPHS", str(tmp_path))
    passed(llama, [FuseAddRMSNorm()])
    before = (tmp_path / "00-fuse_add_rms_norm-before.txt").read_text()
    after = (tmp_path / "00-fuse_add_rms_norm-after.txt").read_text()
    assert "kiln.rms_norm" in before and "kiln.fused_add_rms_norm" not in before
    assert "kiln.fused_add_rms_norm" in after


def test_missed_fusions_are_reported(llama):
    captured = capture(llama)
    ctx = context_for(captured, llama, PassConfig())
    missed = PassManager([FuseAddRMSNorm()], dump_dir=None).missed_fusions(captured.gm, ctx)
    assert len(missed) == 2 * llama.cfg.num_layers
    assert all(m.startswith("fuse_add_rms_norm: ") for m in missed)


def test_interactions_name_the_pass_that_consumed_a_pattern(llama):
    fp8 = PassConfig(quantization="fp8")
    _, trace = compile_graph(llama, fp8)
    assert trace.interactions == [] and trace.alone["fuse_attn_quant"] == llama.cfg.num_layers
    with_rope = PassConfig(quantization="fp8", toggles=parse_toggles("+fuse_rope_attention"))
    _, trace = compile_graph(llama, with_rope)
    assert trace.rewrites("fuse_attn_quant") == 0
    assert trace.interactions == [
        f"fuse_attn_quant: {llama.cfg.num_layers} matches alone, 0 in pipeline "
        "after fuse_rope_attention"
    ]
    assert "stopped matching: fuse_attn_quant" in trace.table()
