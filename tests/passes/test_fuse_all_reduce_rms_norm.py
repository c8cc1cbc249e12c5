"""TP=2 capture carries all_reduce after row-parallel linears; FuseAllReduceRMSNorm folds them."""

from __future__ import annotations

import torch
from pass_checks import assert_same_numerics, counts, passed

from model_defs.decoder import ParallelConfig
from model_defs.loader import build_model
from passes.config import PassConfig
from passes.fuse_add_rms_norm import FuseAddRMSNorm
from passes.fuse_all_reduce_rms_norm import FuseAllReduceRMSNorm


def _tp2_rank0(cfg):
    """Rank 0's shard of a TP=2 model, captured in one process (no process group needed)."""
    model = build_model(cfg, torch.float32, "cpu", ParallelConfig(tp_size=2, tp_rank=0))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if p.dim() > 1 else 1.0))
    return model


def test_tp2_all_reduce_fuses_at_every_layer_boundary(qwen3):
    model = _tp2_rank0(qwen3.cfg)
    layers = qwen3.cfg.num_layers
    before, _ = passed(model, [FuseAddRMSNorm()])
    after, trace = passed(model, [FuseAddRMSNorm(), FuseAllReduceRMSNorm()])
    assert counts(before)["kiln.all_reduce"] == 2 * layers  # after o_proj and down_proj
    # Every all_reduce feeds a residual add + norm: post-attention, next layer's input, final.
    assert trace.rewrites("fuse_all_reduce_rms_norm") == 2 * layers
    c = counts(after)
    assert c["kiln.all_reduce_add_rms_norm"] == 2 * layers
    assert c["kiln.all_reduce"] == 0 and c["kiln.fused_add_rms_norm"] == 0
    assert_same_numerics(after, before, model)  # one process: all_reduce is the identity


def test_off_for_one_rank(llama):
    _, trace = passed(llama, [FuseAddRMSNorm(), FuseAllReduceRMSNorm()])
    assert not trace.passes[1].enabled
    assert PassConfig(tp_size=2).tp_size == 2
