"""The GPU-native lowering's program (export with every step size dynamic, references inlined,
Inductor through torch.compile), exercised on the CPU with engine-like step geometries."""

from __future__ import annotations

import pytest
import torch

from compile_cache.formats import jit_program
from lowering.compile import CompileOptions, pass_config
from lowering.export import EXAMPLE_T, example_input, inline_references
from lowering.lowered import _export
from model_defs.attn_metadata import graph_inputs
from model_defs.kv_cache import allocate_kv_caches
from model_defs.loader import load_model
from model_defs.registry import resolve_model_path
from model_defs.step_inputs import StepSeq, prepare_inputs
from passes.compile import compile_graph

pytestmark = pytest.mark.slow  # Inductor compiles a few specialisations (~30 s on 2 cores)

INLINE = {
    op: "reference"
    for op in ("rms_norm", "rotary_embedding", "silu_and_mul", "fused_add_rms_norm", "attention")
}


def test_program_runs_any_step_geometry_and_matches_eager():
    model = load_model(resolve_model_path("demo"))
    passed, _ = compile_graph(model, pass_config(None, None), max_num_tokens=512)
    ep, inlined = inline_references(_export(passed, CompileOptions()), INLINE)
    assert "kiln::rms_norm" in inlined and "kiln::attention" not in inlined
    names = [n.target for n in passed.gm.graph.find_nodes(op="placeholder")]
    program = jit_program(ep, names)
    program(
        *[
            passed.weights[n] if n in passed.weights else example_input(n, EXAMPLE_T, passed)
            for n in names
        ]
    )
    kv = allocate_kv_caches(model.cfg, 40, 16, torch.float32, "cpu")
    kv_ref = allocate_kv_caches(model.cfg, 40, 16, torch.float32, "cpu")
    steps = [
        [StepSeq(list(range(3, 40)), 0, [10, 11, 12], True), StepSeq([5, 6, 7], 0, [13], True)],
        [StepSeq([9], 37, [10, 11, 12], True)],
        [StepSeq([9], 3, [13], True), StepSeq([4], 38, [10, 11, 12], True)],
    ]
    for batch in steps:
        inp = prepare_inputs(batch, 16, "cpu")
        named = graph_inputs(inp.input_ids, inp.positions, inp.attn, kv)
        out = program(*[passed.weights[n] if n in passed.weights else named[n] for n in names])
        hidden = out[0] if isinstance(out, (list, tuple)) else out
        ref = model(inp.input_ids, inp.positions, inp.attn, kv_ref)
        torch.testing.assert_close(hidden, ref, atol=1e-4, rtol=1e-4)
    for (k, v), (k_ref, v_ref) in zip(kv, kv_ref):
        torch.testing.assert_close(k, k_ref)
        torch.testing.assert_close(v, v_ref)
