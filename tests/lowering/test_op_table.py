"""The manifest's per-op table and the choice of what a GPU artifact runs (no compile here;
`test_kernels_in_graph.py` checks the table against an exported program, and
`test_compile_gpu_target.py` against a compiled artifact)."""

from __future__ import annotations

from collections import Counter

import ir.kernels  # noqa: F401  (registers the kernels)
from ir.targets import get_target
from lowering.op_table import kernel_counts, op_table, runnable_impls


def test_an_op_without_a_kernel_runs_its_reference_and_says_why():
    runnable, why = runnable_impls(Counter({"all_reduce": 2, "rms_norm": 1}), get_target("h100"))
    assert runnable == {"all_reduce": "reference", "rms_norm": "helion"}
    assert why == {"all_reduce": "no kernel exists for this op"}
    rows = op_table(Counter({"all_reduce": 2, "rms_norm": 1}), runnable, {}, [], why)
    assert rows[0] == {
        "op": "all_reduce",
        "count": 2,
        "implementation": "reference",
        "kernels": [],
        "runs": "inlined reference",
        "why_reference": "no kernel exists for this op",
    }
    # A kernel chosen but never traced into the graph is reported as what ran: the reference.
    assert rows[1]["implementation"] == "reference" and rows[1]["runs"] == "inlined reference"


def test_fp8_kernels_are_rejected_on_a_target_without_fp8():
    from dataclasses import replace

    no_fp8 = replace(get_target("h100"), name="no-fp8", has_fp8=False)
    runnable, why = runnable_impls(Counter({"scaled_mm": 1, "silu_and_mul_quant": 1}), no_fp8)
    assert set(runnable.values()) == {"reference"}
    assert "needs fp8 tensor cores" in why["scaled_mm"]
    assert "needs fp8 support" in why["silu_and_mul_quant"]


def test_a_fallback_inside_an_in_graph_form_is_reported():
    launches = {"scaled_mm": [("aten._scaled_mm",), ("reference: per-group activation scales",)]}
    rows = op_table(Counter({"scaled_mm": 2}), {"scaled_mm": "library"}, launches, [], {})
    assert rows[0]["implementation"] == "library + reference"
    assert rows[0]["why_reference"] == "per-group activation scales"
    assert kernel_counts(rows) == {"inductor": 1, "library": 1}


def test_a_dispatcher_call_names_the_bound_provider():
    rows = op_table(Counter({"attention": 3}), {"attention": "native"}, {}, ["attention"], {})
    assert rows[0]["runs"] == "dispatcher call" and rows[0]["kernels"] == ["attention (native)"]


def test_on_an_fp8_gpu_only_ops_without_any_kernel_run_their_reference():
    from ir.registry import all_ops

    ops = [op.name for op in all_ops()]
    runnable, why = runnable_impls(ops, get_target("h100"))
    references = {op for op, provider in runnable.items() if provider == "reference"}
    no_kernel = {op.name for op in all_ops() if [i.provider for i in op.impls] == ["reference"]}
    assert references == no_kernel, {op: why[op] for op in references - no_kernel}
    assert {"fused_add_rms_norm", "silu_and_mul_quant", "qk_norm_rope"} <= set(runnable)
