"""The weight stream on a GPU (driver calls, pinned staging, the device arena viewed by torch):
the plain loader's values bit for bit, and a start that uses it from before torch is up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hf_models import make_checkpoint
from safetensors.torch import load_file, save_file

from model_defs.loader import load_model
from runtime import weight_stream
from runtime.weights import load_weights

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]
CUDA = torch.device("cuda:0")


def _bf16_checkpoint(path: Path, family: str = "qwen2") -> Path:
    make_checkpoint(path, family, seed=11)
    file = path / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(file).items()}, file)
    return path


def _assert_same(got, want):
    got, want = dict(got.named_parameters()), dict(want.named_parameters())
    assert got.keys() == want.keys()
    for name, t in want.items():
        assert got[name].device == t.device and got[name].dtype == t.dtype, name
        assert torch.equal(got[name].view(torch.uint8), t.view(torch.uint8)), name


@pytest.mark.parametrize("chunk", [weight_stream.CHUNK, 4096 + 6])
def test_gpu_stream_views_the_arena_and_equals_the_plain_loader(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(weight_stream, "CHUNK", chunk)
    monkeypatch.setenv("KILN_LOAD_THREADS", "3")
    path = _bf16_checkpoint(tmp_path)
    weights = load_weights(path, torch.bfloat16, CUDA)
    weights.wait()
    arena = weights.stream.arena
    for p in weights.model.parameters():  # views into the arena, not copies
        assert arena.ptr <= p.data_ptr() < arena.ptr + arena.nbytes
    _assert_same(weights.model, load_model(path, torch.bfloat16, CUDA))
    assert weights.figures["h2d_gbps"] > 0 and weights.figures["read_gbps"] > 0


def test_gpu_stream_converts_and_frees_the_arena(tmp_path):
    make_checkpoint(tmp_path, "llama", seed=12)  # fp32 on disk, bf16 on the GPU
    free_before = torch.cuda.mem_get_info()[0]
    weights = load_weights(tmp_path, torch.bfloat16, CUDA)
    assert weights.stream.arena is None  # given back after the conversion
    _assert_same(weights.model, load_model(tmp_path, torch.bfloat16, CUDA))
    del weights
    torch.cuda.empty_cache()
    assert torch.cuda.mem_get_info()[0] >= free_before - 64 * 2**20


def test_gpu_arena_is_freed_with_the_last_parameter(tmp_path):
    """Views into the arena own it: a process that builds engines one after another gets
    each one's weight memory back (a pass table compiles and loads eight 8B engines)."""
    import gc

    path = _bf16_checkpoint(tmp_path, "llama")
    weights = load_weights(path, torch.bfloat16, CUDA)
    weights.wait()
    arena = weights.stream.arena
    assert arena.ptr and arena.nbytes > 0
    params = list(weights.model.parameters())
    del weights
    gc.collect()
    assert arena.ptr, "freed while parameters still view it"
    assert all(torch.isfinite(p.float()).all() for p in params)
    del params
    gc.collect()
    assert arena.ptr == 0, "the arena outlived every tensor over it"


def test_gpu_early_stream_in_a_fresh_process(tmp_path):
    """The CLI's order: stream started before torch is imported, taken by the engine."""
    path = _bf16_checkpoint(tmp_path, "llama")
    code = (
        "import sys; from runtime import weight_stream as ws; "
        f"s = ws.start_early({str(path)!r}, 'auto'); "
        "import torch; from runtime.weights import load_weights; "
        f"w = load_weights(__import__('pathlib').Path({str(path)!r}), torch.bfloat16, "
        "torch.device('cuda')); w.wait(); "
        "assert w.stream is s and w.early, 'the early stream was not taken'; "
        "print(sum(float(p.float().sum()) for p in w.model.parameters()))"
    )
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    want = sum(float(p.float().sum()) for p in load_model(path, torch.bfloat16, CUDA).parameters())
    assert float(proc.stdout.split()[-1]) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # views; converted from fp32
def test_gpu_engine_generates_the_same_tokens_streamed_or_not(monkeypatch, dtype):
    from kiln.llm import LLM
    from runtime.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=8, temperature=0.0)
    kw = dict(compile="never", dtype=dtype, max_model_len=256)
    # Two engines live at once; a budget counts what the process already holds, so the second
    # one's is the larger.
    streamed = LLM("demo", **kw, gpu_memory_utilization=0.2)
    assert streamed.engine.loaded.weight_figures["streamed"] == 1.0
    monkeypatch.setenv("KILN_WEIGHT_STREAM", "0")
    plain = LLM("demo", **kw, gpu_memory_utilization=0.5)
    assert (
        streamed.generate(["hello"], params)[0].token_ids
        == plain.generate(["hello"], params)[0].token_ids
    )
