"""FuseRopeAttention: each layer's rotary_embedding -> attention diamond becomes rope_attention."""

from __future__ import annotations

from pass_checks import assert_same_numerics, counts, passed

from passes.config import PassConfig
from passes.fuse_qk_norm_rope import FuseQKNormRope
from passes.fuse_rope_attention import FuseRopeAttention
from passes.pipeline import default_pipeline, parse_toggles

ON = PassConfig(toggles=parse_toggles("+fuse_rope_attention"))  # it is off by default


def test_fuses_rope_into_attention(llama):
    layers = llama.cfg.num_layers
    before, _ = passed(llama, [])
    after, trace = passed(llama, [FuseRopeAttention()], ON)
    assert trace.rewrites("fuse_rope_attention") == layers
    assert counts(after)["kiln.rope_attention"] == layers
    assert counts(after)["kiln.rotary_embedding"] == counts(after)["kiln.attention"] == 0
    assert counts(before)["kiln.attention"] == layers
    assert_same_numerics(after, before, llama)  # hidden states and the rotated K in the cache


def test_qwen3_rope_is_taken_by_qk_norm_rope_first(qwen3):
    after, trace = passed(qwen3, [FuseQKNormRope(), FuseRopeAttention()], ON)
    assert trace.rewrites("fuse_qk_norm_rope") == qwen3.cfg.num_layers
    assert trace.rewrites("fuse_rope_attention") == 0  # its rotary_embedding is gone


def test_off_by_default_and_on_with_plus():
    fuse = next(p for p in default_pipeline() if p.name == "fuse_rope_attention")
    assert not fuse.enabled(PassConfig())
    assert fuse.enabled(PassConfig(toggles=parse_toggles("+fuse_rope_attention")))
    assert not fuse.enabled(PassConfig(toggles=parse_toggles("none")))
