"""The CUDA driver head start: which devices get one, how to turn it off, and that it is only
ever a head start (on a host without a driver or GPU it does nothing and raises nothing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runtime import cuda_driver

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("device", "ordinal"),
    [("auto", 0), ("cuda", 0), ("cuda:3", 3), ("cpu", None), ("cuda:x", None), ("mps", None)],
)
def test_device_ordinal(device, ordinal):
    assert cuda_driver.device_ordinal(device) == ordinal


def test_nothing_starts_for_the_cpu_or_when_turned_off(monkeypatch):
    monkeypatch.setattr(cuda_driver, "_started", None)
    assert cuda_driver.start_driver_init("cpu") is None
    monkeypatch.setenv("KILN_CUDA_PREWARM", "0")
    assert cuda_driver.start_driver_init("auto") is None
    assert cuda_driver._started is None


def test_the_context_comes_up_exactly_where_torch_sees_a_gpu():
    # True on a GPU host (the context is retained), False without a driver or visible GPU.
    assert cuda_driver._init(0) == torch.cuda.is_available()


def test_a_second_call_starts_nothing(monkeypatch):
    monkeypatch.setattr(cuda_driver, "_started", None)
    monkeypatch.delenv("KILN_CUDA_PREWARM", raising=False)
    first = cuda_driver.start_driver_init("auto")
    assert first is not None
    first.join(timeout=60)
    assert not first.is_alive()
    assert cuda_driver.start_driver_init("auto") is None


@pytest.mark.parametrize(("device", "started"), [("cpu", False), ("auto", True)])
def test_generate_starts_the_driver_only_for_a_device_that_may_be_a_gpu(device, started):
    code = (
        "import sys; from kiln.cli import main; from runtime import cuda_driver; "
        f"rc = main(['generate', 'demo', '--device', '{device}', '--prompt', 'hi', "
        "'--max-tokens', '1', '--compile', 'never']); "
        "print('started', cuda_driver._started is not None); sys.exit(rc)"
    )
    env = dict(os.environ)
    env.pop("KILN_CUDA_PREWARM", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"started {started}" in proc.stdout, proc.stdout[-2000:]
