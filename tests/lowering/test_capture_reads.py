"""A compile reads the checkpoint's values only when the artifact stores tensors derived from
them (padded or quantized weights): otherwise the capture runs on uninitialised weights of the
checkpoint's shapes (never written, so on the CPU never backed by memory), whose headers are
still checked. Either way the graph is the same."""

from __future__ import annotations

import ctypes
import mmap
import sys

import pytest

from kiln.errors import KilnError
from tests.hf_models import make_checkpoint, make_shape_only_checkpoint

PLAIN = dict(intermediate_size=128, vocab_size=320)  # no padding: nothing derived
PADDED = dict(intermediate_size=160, vocab_size=320)  # zero-padded MLP weights are stored


@pytest.fixture
def compiled(tmp_path, monkeypatch):
    """compile(ckpt, **options) -> (CompileResult, checkpoint reads, the lowered PassedModel)."""
    import lowering.lowered as lowered
    import model_defs.loader as loader
    from compile_cache import Store
    from lowering.compile import CompileOptions, compile_model

    reads, lowered_with = [], []
    real_load = loader.load_model

    def counted_load(*args, **kwargs):
        reads.append(args[0])
        return real_load(*args, **kwargs)

    def fake_lower(passed, model, target, staging, options, progress=None, ahead=None):
        lowered_with.append(passed)
        (staging / "graph.txt").write_text(passed.gm.code)
        return {"impls": {}, "manifest": {"lowering": "test", "vocab_size": passed.vocab_size}}

    monkeypatch.setattr(loader, "load_model", counted_load)
    monkeypatch.setattr(lowered, "lower", fake_lower)

    def run(ckpt, **options):
        opts = CompileOptions(model=str(ckpt), target="cpu", **options)
        result = compile_model(opts, Store(tmp_path / f"cache-{len(reads)}-{len(lowered_with)}"),
                               progress=lambda m: None)  # fmt: skip
        return result, list(reads), lowered_with[-1]

    return run


def test_plain_compile_reads_no_weights(compiled, tmp_path):
    make_checkpoint(tmp_path / "a", "llama", seed=1, **PLAIN)
    result, reads, passed = compiled(tmp_path / "a")
    assert result.built and reads == []
    assert (
        result.record["phases"]["load"] >= 0
        and result.artifact.factors["weights"] == "not embedded"
    )


def resident_fraction(tensor) -> float:
    """The fraction of `tensor`'s memory pages the kernel has backed with memory (mincore)."""
    page = mmap.PAGESIZE
    start = tensor.data_ptr() // page * page
    pages = (tensor.data_ptr() + tensor.nbytes - start + page - 1) // page
    vec = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert libc.mincore(start, pages * page, vec) == 0, ctypes.get_errno()
    return sum(v & 1 for v in vec) / pages


@pytest.mark.skipif(sys.platform != "linux", reason="mincore's meaning for anonymous memory")
def test_a_plain_compile_touches_no_parameter_memory(compiled, tmp_path, monkeypatch):
    """A 128 MiB embedding and head (above glibc's largest mmap threshold, so each is its own
    fresh mapping): after load and capture+passes none of their pages is backed, so an 8B
    shape's 16 GB cost neither time nor memory. Zero-filling them would back every page."""
    import torch
    import transformers as tf

    import model_defs.loader as loader

    def no_open(*args, **kwargs):
        raise AssertionError(f"the checkpoint's tensors were opened: {args}")

    monkeypatch.setattr(loader, "safe_open", no_open)
    cfg = tf.LlamaConfig(vocab_size=32768, hidden_size=1024, intermediate_size=1024,
                         num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                         max_position_embeddings=256)  # fmt: skip
    make_shape_only_checkpoint(tmp_path / "big", cfg, torch.float32)
    result, reads, passed = compiled(tmp_path / "big", dtype="float32")
    big = [passed.weights["p_embed_tokens"], passed.lm_head]
    assert reads == [] and all(t.nbytes == 128 * 2**20 for t in big)
    assert [resident_fraction(t) for t in big] == pytest.approx([0, 0], abs=0.01)


def test_padding_reads_the_weights_and_keys_on_them(compiled, tmp_path):
    make_checkpoint(tmp_path / "p", "llama", seed=1, **PADDED)
    result, reads, passed = compiled(tmp_path / "p")
    assert reads == [tmp_path / "p"] and result.artifact.factors["weights"] != "not embedded"
    padded = [t for n, t in passed.weights.items() if "gate_up" in n]
    assert padded and all(float(t.abs().sum()) > 0 for t in padded)  # real values, zero pad


def test_quantized_compile_reads_the_weights_up_front(compiled, tmp_path):
    make_checkpoint(tmp_path / "q", "llama", seed=1, **PLAIN)
    result, reads, _ = compiled(tmp_path / "q", quantization="fp8")
    assert reads == [tmp_path / "q"]


def test_same_graph_hash_read_or_not(compiled, tmp_path, monkeypatch):
    import lowering.compile as compile_mod

    make_checkpoint(tmp_path / "a", "llama", seed=1, **PLAIN)
    zero_weights = compiled(tmp_path / "a")[0]
    real = compile_mod._timed_load
    monkeypatch.setattr(compile_mod, "_timed_load", lambda *a: real(*a[:-1], True))
    read = compiled(tmp_path / "a")[0]
    assert read.artifact.factors["graph_hash"] == zero_weights.artifact.factors["graph_hash"]
    assert read.key == zero_weights.key


def test_a_truncated_shard_still_fails_the_compile(compiled, tmp_path):
    make_checkpoint(tmp_path / "t", "llama", seed=1, **PLAIN)
    file = tmp_path / "t" / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-64])
    with pytest.raises(KilnError, match="corrupt or truncated"):
        compiled(tmp_path / "t")
