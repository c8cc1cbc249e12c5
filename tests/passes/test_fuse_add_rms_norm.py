"""FuseAddRMSNorm: each residual add + rms_norm becomes one fused_add_rms_norm."""

from __future__ import annotations

from pass_checks import assert_same_numerics, counts, passed

from passes.fuse_add_rms_norm import FuseAddRMSNorm


def test_fuses_every_residual_norm(llama):
    layers = llama.cfg.num_layers
    before, _ = passed(llama, [])
    after, trace = passed(llama, [FuseAddRMSNorm()])
    # Residual adds: after attention in every layer, before every layer but the first, final.
    assert counts(before)["aten.add"] == 2 * layers
    assert counts(before)["kiln.rms_norm"] == 2 * layers + 1
    assert trace.rewrites("fuse_add_rms_norm") == 2 * layers
    assert counts(after)["kiln.fused_add_rms_norm"] == 2 * layers
    assert counts(after)["aten.add"] == 0
    assert counts(after)["kiln.rms_norm"] == 1  # layer 0's input norm has no residual yet
    assert trace.missed == []
    assert_same_numerics(after, before, llama)
