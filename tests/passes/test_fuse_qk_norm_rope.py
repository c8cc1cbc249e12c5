"""FuseQKNormRope: Qwen3's q/k norms and rotary become one qk_norm_rope per layer."""

from __future__ import annotations

from pass_checks import assert_same_numerics, counts, passed

from passes.fuse_qk_norm_rope import FuseQKNormRope


def test_fuses_qk_norm_and_rope(qwen3):
    layers = qwen3.cfg.num_layers
    before, _ = passed(qwen3, [])
    after, trace = passed(qwen3, [FuseQKNormRope()])
    assert counts(before)["kiln.rotary_embedding"] == layers
    assert trace.rewrites("fuse_qk_norm_rope") == layers
    assert counts(after)["kiln.qk_norm_rope"] == layers
    assert counts(after)["kiln.rotary_embedding"] == 0
    assert counts(after)["kiln.rms_norm"] == counts(before)["kiln.rms_norm"] - 2 * layers
    assert_same_numerics(after, before, qwen3)


def test_leaves_models_without_qk_norm_alone(llama):
    after, trace = passed(llama, [FuseQKNormRope()])
    assert trace.rewrites("fuse_qk_norm_rope") == 0
    assert counts(after)["kiln.rotary_embedding"] == llama.cfg.num_layers
