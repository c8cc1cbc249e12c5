"""IR ops' fake implementations run once per input description and fake mode, and the outputs
they stand in for have the same sizes, strides and dtypes; a capture is the same either way."""

from __future__ import annotations

import pytest
import torch
from hf_models import make_checkpoint
from torch._subclasses.fake_tensor import FakeTensorMode

from ir import fake_memo
from model_defs.loader import load_model
from passes import capture_layers
from passes.capture import canonical_text, capture


def _counting(calls):
    def fake(x, w, eps, flag):
        calls.append(eps)
        return x.new_empty(x.shape).t(), (w * 2).to(torch.bfloat16)  # a transposed stride

    return fake_memo.memoized(fake)


def test_one_run_per_description_and_mode():
    calls = []
    fake = _counting(calls)
    mode = FakeTensorMode()
    x, w = (mode.from_tensor(torch.randn(3, 4)) for _ in range(2))
    with mode:
        first = fake(x, w, 1e-5, True)
        again = fake(mode.from_tensor(torch.randn(3, 4)), w, 1e-5, True)
        assert len(calls) == 1
        for a, b in zip(first, again, strict=True):
            assert (a.shape, a.stride(), a.dtype) == (b.shape, b.stride(), b.dtype)
            assert a is not b and b.fake_mode is mode
        fake(x, w, 1e-6, True)  # another literal
        fake(x, w, 1e-5, False)
        fake(mode.from_tensor(torch.randn(4, 4)), w, 1e-5, True)  # another shape
        assert len(calls) == 4
    other = FakeTensorMode()
    with other:
        fake(other.from_tensor(torch.randn(3, 4)), other.from_tensor(torch.randn(3, 4)), 1e-5, True)
    assert len(calls) == 5  # a new mode (a new capture) starts over


def test_real_tensors_and_the_switch_run_it_every_time(monkeypatch):
    calls = []
    fake = _counting(calls)
    x = torch.randn(3, 4)
    fake(x, x, 1e-5, True)
    fake(x, x, 1e-5, True)
    assert len(calls) == 2
    monkeypatch.setattr(fake_memo, "ENABLED", False)
    mode = FakeTensorMode()
    with mode:
        y = mode.from_tensor(x)
        fake(y, y, 1e-5, True)
        fake(y, y, 1e-5, True)
    assert len(calls) == 4


@pytest.mark.parametrize("family", ["qwen3", "mistral"])
def test_capture_is_the_same_with_and_without_it(tmp_path, monkeypatch, family):
    make_checkpoint(tmp_path, family, seed=4, num_hidden_layers=5)
    model = load_model(tmp_path)
    monkeypatch.setattr(capture_layers, "probe", lambda model: None)  # trace every layer
    memo = canonical_text(capture(model).gm)
    monkeypatch.setattr(fake_memo, "ENABLED", False)
    assert canonical_text(capture(model).gm) == memo
