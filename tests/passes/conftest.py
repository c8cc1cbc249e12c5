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
