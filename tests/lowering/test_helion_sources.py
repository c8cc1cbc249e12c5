"""The Helion source worker: answers as this process would, and where it cannot answer (dead,
or failing) the source is generated here, so a worker problem never changes the result."""

from __future__ import annotations

import json
import logging
import types

import pytest
import torch

import ir.kernels.helion_util as helion_util
from ir.kernels.base import load_config
from ir.kernels.rms_norm import rms_norm_kernel
from lowering.helion_sources import SourceWorker

CONFIG = json.dumps(load_config("rms_norm", "h100"), sort_keys=True)
KEY = (("tensor", (13, 96), torch.bfloat16, "cpu"), ("tensor", (96,), torch.bfloat16, "cpu"),
       ("value", 1e-5))  # fmt: skip


@pytest.mark.slow  # Helion is imported here and in the worker: ~10 s each on the CPU machine
def test_the_worker_answers_as_this_process_would():
    with SourceWorker() as worker:
        remote = worker.plain_source(rms_norm_kernel, CONFIG, KEY)
        assert worker.plain_source(rms_norm_kernel, CONFIG, KEY) is remote  # asked once
    local = helion_util._plain_for_args(rms_norm_kernel, CONFIG, KEY)
    assert remote == local and "triton.jit" in remote.source
    assert not helion_util.mentions_helion(remote.source)  # a plain module


def test_a_dead_worker_leaves_the_sources_to_this_process(monkeypatch, caplog):
    here = []
    monkeypatch.setattr(helion_util, "_plain_for_args", lambda *a: here.append(a) or "here")
    with SourceWorker() as worker:
        worker._process.kill()
        worker._process.join()
        with caplog.at_level(logging.WARNING, logger="lowering.helion_sources"):
            assert worker.plain_source(rms_norm_kernel, CONFIG, KEY) == "here"
    assert here == [(rms_norm_kernel, CONFIG, KEY)] and "worker is gone" in caplog.text


@pytest.mark.slow  # the worker imports Helion before it answers
def test_an_error_in_the_worker_is_raised_by_this_process(monkeypatch, caplog):
    """A kernel the worker cannot generate is generated here, where the error is raised."""

    def fails_here(fn, config_json, key):
        raise ValueError(f"cannot generate {fn.__qualname__}")

    monkeypatch.setattr(helion_util, "_plain_for_args", fails_here)
    missing = types.SimpleNamespace(__module__=rms_norm_kernel.__module__, __qualname__="nope")
    with SourceWorker() as worker, caplog.at_level(logging.WARNING):
        with pytest.raises(ValueError, match="cannot generate nope"):
            worker.plain_source(missing, CONFIG, KEY)
    assert "AttributeError" in caplog.text  # the worker's own failure, logged
