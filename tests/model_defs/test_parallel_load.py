"""Weights read on several threads land exactly where a one-thread load puts them."""

from __future__ import annotations

import torch

from tests.hf_models import make_checkpoint


def test_threaded_load_equals_sequential(tmp_path, monkeypatch):
    from model_defs.loader import load_model

    make_checkpoint(tmp_path, "qwen2", seed=3)  # fused qkv (with bias) and gate_up slices
    monkeypatch.setenv("KILN_LOAD_THREADS", "1")
    one = dict(load_model(tmp_path).named_parameters())
    monkeypatch.setenv("KILN_LOAD_THREADS", "4")
    many = dict(load_model(tmp_path).named_parameters())
    assert one.keys() == many.keys()
    for name, tensor in one.items():
        assert tensor.abs().sum() > 0, name
        torch.testing.assert_close(many[name], tensor, rtol=0, atol=0, msg=name)


def test_bad_thread_count_is_a_clear_error(tmp_path, monkeypatch):
    import pytest

    from kiln.errors import KilnError
    from model_defs.loader import load_model

    make_checkpoint(tmp_path, "llama", seed=1)
    monkeypatch.setenv("KILN_LOAD_THREADS", "zero")
    with pytest.raises(KilnError, match="KILN_LOAD_THREADS='zero'"):
        load_model(tmp_path)


def test_threaded_load_under_inference_mode(tmp_path, monkeypatch):
    """Inference mode is per thread: the copy threads must enter it as the caller did."""
    from model_defs.loader import load_model

    make_checkpoint(tmp_path, "llama", seed=2)
    monkeypatch.setenv("KILN_LOAD_THREADS", "3")
    with torch.inference_mode():
        model = load_model(tmp_path)
    monkeypatch.setenv("KILN_LOAD_THREADS", "1")
    want = dict(load_model(tmp_path).named_parameters())
    for name, tensor in model.named_parameters():
        torch.testing.assert_close(tensor, want[name], rtol=0, atol=0, msg=name)
