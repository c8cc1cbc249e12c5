"""QuantizeFP8: linears become quant_fp8 + scaled_mm with fp8 per-channel weights."""

from __future__ import annotations

import torch
from pass_checks import counts, min_cosine, passed, run_with_caches

from ir.ops.quant import FP8_DTYPE
from passes.config import PassConfig
from passes.quantize_fp8 import QuantizeFP8

FP8 = PassConfig(quantization="fp8")


def test_every_linear_becomes_scaled_mm(llama):
    layers = llama.cfg.num_layers
    before, _ = passed(llama, [])
    after, trace = passed(llama, [QuantizeFP8()], FP8)
    assert counts(before)["aten.linear"] == 4 * layers  # qkv, o, gate_up, down
    assert trace.rewrites("quantize_fp8") == 4 * layers
    c = counts(after)
    assert c["aten.linear"] == 0 and c["kiln.scaled_mm"] == 4 * layers
    assert c["kiln.quant_fp8"] == 4 * layers  # one per distinct activation
    wq = after.weights["p_layers_0_mlp_down_proj_weight_fp8"]
    scale = after.weights["p_layers_0_mlp_down_proj_weight_scale"]
    assert wq.dtype == FP8_DTYPE and scale.shape == (llama.cfg.hidden_size,)
    assert "p_layers_0_mlp_down_proj_weight" not in after.weights  # the bf16/fp32 copy is gone
    assert min_cosine(after, before, llama) >= 0.99


def test_group_scales_and_per_token_fallback(llama):
    after, _ = passed(llama, [QuantizeFP8()], PassConfig(quantization="fp8", fp8_group_size=32))
    groups = [
        n.args[1] for n in after.gm.graph.nodes if n.target is torch.ops.kiln.quant_fp8.default
    ]
    # hidden (64) and q_size (64) split into groups of 32; intermediate 160 is 5 groups too.
    assert set(groups) == {32}
    after, _ = passed(llama, [QuantizeFP8()], PassConfig(quantization="fp8", fp8_group_size=128))
    groups = [
        n.args[1] for n in after.gm.graph.nodes if n.target is torch.ops.kiln.quant_fp8.default
    ]
    assert set(groups) == {0}  # no width is a multiple of 128: per-token scales instead
    hidden, _ = run_with_caches(after, llama, [3])
    assert torch.isfinite(hidden).all()


def test_disabled_without_quantization(llama):
    _, trace = passed(llama, [QuantizeFP8()])
    assert not trace.passes[0].enabled
