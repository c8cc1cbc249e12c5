"""Pass contract, pipeline order, --passes toggles, CompileTrace, graph dumps, missed fusions."""

from __future__ import annotations

import pytest
from pass_checks import passed

from kiln.errors import KilnError
from passes.capture import capture
from passes.compile import compile_graph, context_for
from passes.config import PassConfig
from passes.fuse_add_rms_norm import FuseAddRMSNorm
from passes.manager import PassManager
from passes.pipeline import default_pipeline, parse_toggles, pass_names

PHASES = [
    "eliminate_noops",
    "fuse_add_rms_norm",
    "fuse_qk_norm_rope",
    "quantize_fp8",
    "fuse_norm_quant",
    "fuse_act_quant",
    "fuse_attn_quant",
    "fuse_all_reduce_rms_norm",
    "pad_for_kernels",
]


def test_pipeline_is_in_phase_order():
    assert pass_names() == PHASES


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
    assert on == {"eliminate_noops", "fuse_qk_norm_rope"}
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
    assert [r.name for r in trace.passes] == PHASES
    fused = trace.passes[1]
    assert fused.enabled and fused.rewrites == 4 and fused.wall_s > 0
    assert fused.nodes_after != fused.nodes_before
    assert not trace.passes[3].enabled  # quantize_fp8 without --quantization
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
