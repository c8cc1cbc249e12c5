"""The default pipeline end to end: expected rewrite counts, greedy tokens unchanged, fp8."""

from __future__ import annotations

import pytest
import torch
from pass_checks import counts, min_cosine, passed

from model_defs.kv_cache import allocate_kv_caches
from model_defs.loader import load_model
from model_defs.registry import resolve_model_path
from model_defs.step_inputs import StepSeq
from passes.compile import compile_graph
from passes.config import PassConfig
from passes.pipeline import parse_toggles
from runtime.model_runner import ModelRunner

BLOCK = 4
PROMPTS = [[5, 17, 3, 99, 42, 7, 250], [11, 2]]


@pytest.fixture(scope="module")
def demo():
    return load_model(resolve_model_path("demo"), torch.float32, "cpu")


def greedy(forward, compute_logits, model, prompts, steps: int = 32) -> list[list[int]]:
    """Greedy decode all prompts in one batch; each sequence owns a contiguous block range."""
    per_seq = -(-(max(map(len, prompts)) + steps) // BLOCK)
    kv = allocate_kv_caches(model.cfg, per_seq * len(prompts), BLOCK, torch.float32, "cpu")
    runner = ModelRunner(forward, compute_logits, kv, BLOCK, "cpu")
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(len(prompts))]
    tokens = [list(p) for p in prompts]
    batch = [StepSeq(p, 0, t, True) for p, t in zip(prompts, tables, strict=True)]
    for _ in range(steps):
        nxt = runner.execute(batch).argmax(dim=-1).tolist()
        for seq, tok in zip(tokens, nxt, strict=True):
            seq.append(tok)
        batch = [StepSeq([s[-1]], len(s) - 1, t, True) for s, t in zip(tokens, tables, strict=True)]
    return [s[len(p) :] for s, p in zip(tokens, prompts, strict=True)]


def _expected(model) -> dict[str, int]:
    cfg, layers = model.cfg, model.cfg.num_layers
    return {
        "eliminate_noops": 0,
        "fuse_add_rms_norm": 2 * layers,
        "fuse_qk_norm_rope": layers if cfg.qk_norm else 0,
        "pad_for_kernels": layers * (cfg.intermediate_size % 64 != 0) + (cfg.vocab_size % 64 != 0),
    }


@pytest.mark.parametrize("which", ["demo", "qwen3", "odd_mha"])
def test_default_pipeline_counts_and_greedy_tokens(which, request):
    model = request.getfixturevalue(which)
    full, trace = compile_graph(model)
    for name, expected in _expected(model).items():
        assert trace.rewrites(name) == expected, name
    assert trace.missed == []
    assert trace.rewrites("pad_for_kernels") > 0  # both models have an odd intermediate size
    off, off_trace = compile_graph(model, PassConfig(toggles=parse_toggles("none")))
    assert all(r.rewrites == 0 for r in off_trace.passes)
    want = greedy(model, model.compute_logits, model, PROMPTS)
    assert greedy(off, off.compute_logits, model, PROMPTS) == want
    assert greedy(full, full.compute_logits, model, PROMPTS) == want
    assert len(want[0]) == 32


@pytest.mark.parametrize("which", ["llama", "qwen3"])
def test_fp8_graph_has_only_fused_quant_ops(which, request):
    model = request.getfixturevalue(which)
    layers = model.cfg.num_layers
    fp8, trace = compile_graph(model, PassConfig(quantization="fp8"))
    c = counts(fp8)
    assert c["kiln.quant_fp8"] == 0  # every activation quant was folded into its producer
    assert c["aten.linear"] == 0 and c["kiln.scaled_mm"] == 4 * layers
    assert c["kiln.attention_quant"] == layers and c["kiln.silu_and_mul_quant"] == layers
    assert c["kiln.rms_norm_quant"] + c["kiln.fused_add_rms_norm_quant"] == 2 * layers
    assert trace.missed == []
    reference, _ = passed(model, [])
    batches = ([1], [7], [5, 1, 3], [13, 6])
    assert min_cosine(fp8, reference, model, batches) >= 0.99


def test_pass_config_errors_are_clear():
    with pytest.raises(ValueError, match="quantization='int4'"):
        PassConfig(quantization="int4")
    with pytest.raises(ValueError, match="token_buckets"):
        PassConfig(token_buckets=(8, 4))
