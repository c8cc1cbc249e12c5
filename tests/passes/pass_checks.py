"""Helpers for pass tests: run a pipeline, count ops, compare against the unpassed graph."""

from __future__ import annotations

import torch

from passes.compile import PassedModel, compile_graph
from passes.config import PassConfig
from passes.graph import op_counts
from passes.numerics import fresh_kv, step_inputs

# Prompt-length sets: T = 1, an odd T, and a mixed batch (odd T, several sequences).
BATCHES = ([1], [7], [5, 1, 3])


def passed(model, pipeline, cfg: PassConfig | None = None):
    """(PassedModel, CompileTrace) for `model` after exactly `pipeline`."""
    return compile_graph(model, cfg or PassConfig(), pipeline=pipeline)


def counts(forward: PassedModel):
    return op_counts(forward.gm)  # a Counter: absent ops count 0


def run_with_caches(forward, model, prompt_lens, seed=0):
    """(hidden, kv caches after the step) on a fresh KV cache."""
    inputs, blocks = step_inputs(model, prompt_lens, seed)
    kv = fresh_kv(model, blocks)
    with torch.inference_mode():
        hidden = forward(inputs.input_ids, inputs.positions, inputs.attn, kv)
    return hidden, kv


def assert_same_numerics(a, b, model, atol=1e-5, rtol=1e-5, batches=BATCHES):
    """`a` and `b` agree on random prompts for every batch shape, in hidden states and KV."""
    for seed, lens in enumerate(batches):
        ha, kva = run_with_caches(a, model, lens, seed)
        hb, kvb = run_with_caches(b, model, lens, seed)
        assert ha.shape == (sum(lens), model.cfg.hidden_size)
        torch.testing.assert_close(ha, hb, atol=atol, rtol=rtol)
        for (ka, va), (kb, vb) in zip(kva, kvb, strict=True):
            torch.testing.assert_close(ka, kb, atol=atol, rtol=rtol)
            torch.testing.assert_close(va, vb, atol=atol, rtol=rtol)


def min_cosine(a, b, model, batches=BATCHES) -> float:
    worst = 1.0
    for seed, lens in enumerate(batches):
        ha, _ = run_with_caches(a, model, lens, seed)
        hb, _ = run_with_caches(b, model, lens, seed)
        cos = torch.nn.functional.cosine_similarity(ha.float(), hb.float(), dim=-1).min().item()
        worst = min(worst, cos)
    return worst
