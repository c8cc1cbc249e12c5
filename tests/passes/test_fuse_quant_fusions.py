"""FuseNormQuant, FuseActQuant, FuseAttnQuant: each folds a quant_fp8 into its producer."""

from __future__ import annotations

from pass_checks import assert_same_numerics, counts, passed

from passes.config import PassConfig
from passes.fuse_act_quant import FuseActQuant
from passes.fuse_add_rms_norm import FuseAddRMSNorm
from passes.fuse_attn_quant import FuseAttnQuant
from passes.fuse_norm_quant import FuseNormQuant
from passes.quantize_fp8 import QuantizeFP8

FP8 = PassConfig(quantization="fp8")
QUANTIZED = [FuseAddRMSNorm(), QuantizeFP8()]


def test_fuse_norm_quant(llama):
    layers = llama.cfg.num_layers
    before, _ = passed(llama, QUANTIZED, FP8)
    after, trace = passed(llama, [*QUANTIZED, FuseNormQuant()], FP8)
    # Inputs of qkv_proj and gate_up_proj: layer 0's first norm plain, the rest fused_add.
    assert trace.rewrites("fuse_norm_quant") == 2 * layers
    c = counts(after)
    assert c["kiln.rms_norm_quant"] == 1
    assert c["kiln.fused_add_rms_norm_quant"] == 2 * layers - 1
    assert c["kiln.fused_add_rms_norm"] == 1  # the final norm feeds no linear
    assert c["kiln.quant_fp8"] == counts(before)["kiln.quant_fp8"] - 2 * layers
    assert_same_numerics(after, before, llama)


def test_fuse_act_quant(llama):
    layers = llama.cfg.num_layers
    before, _ = passed(llama, QUANTIZED, FP8)
    after, trace = passed(llama, [*QUANTIZED, FuseActQuant()], FP8)
    assert trace.rewrites("fuse_act_quant") == layers
    c = counts(after)
    assert c["kiln.silu_and_mul_quant"] == layers and c["kiln.silu_and_mul"] == 0
    assert c["kiln.quant_fp8"] == counts(before)["kiln.quant_fp8"] - layers
    assert_same_numerics(after, before, llama)


def test_fuse_attn_quant_keeps_kv_writes(qwen3):
    layers = qwen3.cfg.num_layers
    before, _ = passed(qwen3, QUANTIZED, FP8)
    after, trace = passed(qwen3, [*QUANTIZED, FuseAttnQuant()], FP8)
    assert trace.rewrites("fuse_attn_quant") == layers
    c = counts(after)
    assert c["kiln.attention_quant"] == layers and c["kiln.attention"] == 0
    assert c["kiln.quant_fp8"] == counts(before)["kiln.quant_fp8"] - layers
    assert_same_numerics(after, before, qwen3)  # compares the written KV caches too


def test_quant_fusions_are_off_without_fp8(llama):
    _, trace = passed(llama, [FuseNormQuant(), FuseActQuant(), FuseAttnQuant()])
    assert not any(r.enabled for r in trace.passes)
