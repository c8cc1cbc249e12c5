"""A deep model captured through four traced layers and copies is the full export: the same
canonical text (so the same graph hash), inputs, weights, numerics and post-pass graph; models
whose layers differ are exported in full."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hf_models import make_checkpoint
from pass_checks import assert_same_numerics

from model_defs.decoder import ParallelConfig
from model_defs.loader import build_model, load_model
from passes import capture_layers
from passes.capture import canonical_text, capture, graph_inputs
from passes.compile import PassedModel, compile_graph
from passes.config import PassConfig

FAMILIES = ("llama", "llama3", "qwen2", "qwen3", "mistral")


@pytest.fixture(scope="module", params=FAMILIES)
def deep(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    make_checkpoint(path, request.param, seed=21, num_hidden_layers=7)
    return load_model(path)


def _full(model, monkeypatch, **kw):
    with monkeypatch.context() as m:
        m.setattr(capture_layers, "probe", lambda model: None)
        return capture(model, **kw)


def test_copied_layers_are_the_full_export(deep, monkeypatch):
    assert capture_layers.probe(deep) is not None  # the copying path runs
    copied, full = capture(deep), _full(deep, monkeypatch)
    assert canonical_text(copied.gm) == canonical_text(full.gm)
    assert graph_inputs(copied.gm) == graph_inputs(full.gm)
    assert copied.weights.keys() == full.weights.keys()
    assert all(copied.weights[k] is full.weights[k] for k in full.weights)  # no copies
    assert copied.num_layers == full.num_layers == 7
    run = [PassedModel(c.gm, c.weights, c.lm_head, deep.cfg.vocab_size) for c in (copied, full)]
    assert_same_numerics(run[0], run[1], deep, atol=0, rtol=0)


def test_passes_see_the_same_graph(deep, monkeypatch):
    cfg = PassConfig()
    copied, trace = compile_graph(deep, cfg)
    with monkeypatch.context() as m:
        m.setattr(capture_layers, "probe", lambda model: None)
        full, full_trace = compile_graph(deep, cfg)
    assert trace.graph_hash == full_trace.graph_hash
    assert [p.rewrites for p in trace.passes] == [p.rewrites for p in full_trace.passes]
    assert canonical_text(copied.gm) == canonical_text(full.gm)


def test_tensor_parallel_and_bf16_graphs_copy_too(deep, monkeypatch):
    for dtype, par in ((torch.bfloat16, ParallelConfig()), (torch.float32, ParallelConfig(2, 0))):
        model = build_model(deep.cfg, dtype, "cpu", par)
        assert canonical_text(capture(model).gm) == canonical_text(_full(model, monkeypatch).gm)


def test_layers_that_differ_are_exported_in_full(deep, monkeypatch):
    windows = (0, 0, 0, 8, 0, 0, 0)  # one sliding-window layer among full-attention ones
    model = build_model(dataclasses.replace(deep.cfg, sliding_windows=windows), torch.float32,
                        "cpu", ParallelConfig())  # fmt: skip
    assert capture_layers.probe(model) is None
    text = canonical_text(capture(model).gm)
    assert text == canonical_text(_full(model, monkeypatch).gm) and "8)" in text


def test_sections_that_do_not_line_up_fall_back(deep, monkeypatch):
    """Layer 1 differs from layer 2 (a window the module check was told to ignore): the probe's
    sections are compared node for node, so the copy is refused and the model exported."""
    windows = (0, 0, 8, 8, 8, 8, 8)
    model = build_model(dataclasses.replace(deep.cfg, sliding_windows=windows), torch.float32,
                        "cpu", ParallelConfig())  # fmt: skip
    monkeypatch.setattr(capture_layers, "_alike", lambda layers: True)
    calls = []
    real = capture_layers.extend
    monkeypatch.setattr(capture_layers, "extend", lambda *a: calls.append(real(*a)) or calls[-1])
    text = canonical_text(capture(model).gm)
    assert calls == [False]
    monkeypatch.undo()
    assert text == canonical_text(_full(model, monkeypatch).gm)


def test_shallow_models_are_exported_directly(tmp_path):
    make_checkpoint(tmp_path, "llama", seed=1, num_hidden_layers=4)
    assert capture_layers.probe(load_model(tmp_path)) is None
