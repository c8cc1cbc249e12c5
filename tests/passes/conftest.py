"""Tiny models shared by the pass tests (built once per session: capture is the slow part)."""

from __future__ import annotations

import pytest
import torch
from hf_models import make_checkpoint

from model_defs.loader import load_model


@pytest.fixture(scope="session")
def llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    make_checkpoint(path, "llama", seed=1)
    return load_model(path, torch.float32, "cpu")


@pytest.fixture(scope="session")
def qwen3(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3")
    make_checkpoint(path, "qwen3", seed=2)
    return load_model(path, torch.float32, "cpu")


@pytest.fixture(scope="session")
def qwen3_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3-path")
    make_checkpoint(path, "qwen3", seed=2)
    return path


@pytest.fixture(scope="session")
def odd_mha(tmp_path_factory):
    """Multi-head attention, tied embeddings, a vocabulary and hidden size off every multiple."""
    path = tmp_path_factory.mktemp("odd-mha")
    make_checkpoint(
        path,
        "qwen2",
        seed=3,
        num_key_value_heads=4,
        vocab_size=317,
        tie_word_embeddings=True,
        hidden_size=72,
        intermediate_size=100,
        head_dim=18,
    )
    return load_model(path, torch.float32, "cpu")
