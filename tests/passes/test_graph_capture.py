"""Capture: symbolic T, weights as placeholders, runnable graph, stable canonical text/hash."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pass_checks import assert_same_numerics

from model_defs.decoder import ParallelConfig
from model_defs.loader import build_model, load_model
from model_defs.registry import read_config
from passes.capture import USER_INPUTS, canonical_text, capture, graph_hash
from passes.compile import PassedModel

ROOT = Path(__file__).resolve().parents[2]


def _unpassed(model) -> PassedModel:
    c = capture(model)
    return PassedModel(c.gm, c.weights, c.lm_head, model.cfg.vocab_size)


def test_token_count_is_the_one_symbolic_dimension(llama):
    gm = capture(llama, max_num_tokens=4096).gm
    placeholders = {n.target: n.meta["val"] for n in gm.graph.find_nodes(op="placeholder")}
    for name in ("input_ids", "positions", "attn_slot_mapping"):
        assert isinstance(placeholders[name].shape[0], torch.SymInt)
    dynamic = [
        n for n, v in placeholders.items() if any(isinstance(d, torch.SymInt) for d in v.shape)
    ]
    assert sorted(dynamic) == ["attn_slot_mapping", "input_ids", "positions"]
    assert "range T in [1, 4096]" in canonical_text(gm)


def test_weights_are_placeholders_not_constants(llama):
    c = capture(llama)
    assert not list(c.gm.graph.find_nodes(op="get_attr"))
    names = [n.target for n in c.gm.graph.find_nodes(op="placeholder")]
    assert "p_layers_0_mlp_down_proj_weight" in names and "b_cos_sin_cache" in names
    assert all(n in c.weights or n in USER_INPUTS or n.startswith("kv_caches_") for n in names)
    assert c.weights["p_embed_tokens"] is llama.embed_tokens  # no copy


def test_captured_graph_runs_like_the_model(qwen3):
    assert_same_numerics(_unpassed(qwen3), qwen3, qwen3, atol=1e-6, rtol=1e-6)


def test_hash_ignores_weight_values(llama):
    other = build_model(llama.cfg, torch.float32, "cpu", ParallelConfig())
    assert graph_hash(capture(other).gm) == graph_hash(capture(llama).gm)


def test_hash_is_the_same_in_another_process(qwen3_path):
    code = (
        "import sys; from model_defs.loader import load_model; from passes.capture import "
        "capture, graph_hash; print(graph_hash(capture(load_model(__import__('pathlib')"
        ".Path(sys.argv[1]))).gm))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(qwen3_path)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == graph_hash(capture(load_model(qwen3_path)).gm)


# Config fields that shape the graph, each with a value that must change the hash.
GRAPH_FIELDS = {
    "hidden_size": 128,
    "intermediate_size": 96,
    "num_layers": 3,
    "num_heads": 8,
    "num_kv_heads": 4,
    "head_dim": 16,
    "rms_norm_eps": 1e-6,
    "qkv_bias": True,
    "qk_norm": False,
    "tie_word_embeddings": True,
    "vocab_size": 384,
}


@pytest.fixture(scope="module")
def base_hash(qwen3_path):
    _, cfg = read_config(qwen3_path)
    return graph_hash(capture(build_model(cfg, torch.float32, "cpu", ParallelConfig())).gm)


@pytest.mark.parametrize("field", sorted(GRAPH_FIELDS))
def test_hash_changes_with_each_graph_shaping_field(qwen3_path, base_hash, field):
    _, cfg = read_config(qwen3_path)
    changed = dataclasses.replace(cfg, **{field: GRAPH_FIELDS[field]})
    model = build_model(changed, torch.float32, "cpu", ParallelConfig())
    assert graph_hash(capture(model).gm) != base_hash


def test_hash_changes_with_sliding_window_dtype_and_tp(qwen3_path, base_hash):
    _, cfg = read_config(qwen3_path)
    seen = {base_hash}
    windowed = dataclasses.replace(cfg, sliding_windows=(8,) * cfg.num_layers)
    variants = [
        build_model(windowed, torch.float32, "cpu", ParallelConfig()),
        build_model(cfg, torch.bfloat16, "cpu", ParallelConfig()),
        build_model(cfg, torch.float32, "cpu", ParallelConfig(tp_size=2)),
    ]
    for model in variants:
        seen.add(graph_hash(capture(model).gm))
    assert len(seen) == 4
