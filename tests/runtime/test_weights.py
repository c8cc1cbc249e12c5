"""Weights streamed into an arena are the plain loader's, bit for bit, in every dtype pairing;
the CLI's early stream is taken only by an engine of the same checkpoint and device; failures
are named."""

from __future__ import annotations

import json
import os

import pytest
import torch
from hf_models import make_checkpoint
from safetensors.torch import load_file, save_file

from kiln.errors import KilnError
from model_defs.loader import load_model
from runtime import weight_stream
from runtime.weights import load_weights

CPU = torch.device("cpu")


def assert_same_model(got, want):
    got, want = dict(got.named_parameters()), dict(want.named_parameters())
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name].view(torch.uint8), tensor.view(torch.uint8)), name


@pytest.fixture(autouse=True)
def _no_leftover_early_stream(monkeypatch):
    monkeypatch.setattr(weight_stream, "_early", None)


@pytest.mark.parametrize("family", ["llama", "llama3", "qwen2", "qwen3", "mistral"])
def test_streamed_equals_plain_for_every_family(tmp_path, family, monkeypatch):
    make_checkpoint(tmp_path, family, seed=7)
    monkeypatch.setattr(weight_stream, "CHUNK", 4096 + 12)  # many chunks, odd boundaries
    monkeypatch.setenv("KILN_LOAD_THREADS", "3")
    weights = load_weights(tmp_path, torch.float32, CPU)
    weights.wait()
    assert weights.figures["streamed"] == 1.0 and weights.figures["threads"] == 3.0
    assert_same_model(weights.model, load_model(tmp_path, torch.float32, "cpu"))
    assert torch.equal(weights.model.cos_sin_cache, load_model(tmp_path).cos_sin_cache)


@pytest.mark.parametrize(("saved", "run"), [(torch.float32, torch.bfloat16),
                                            (torch.bfloat16, torch.float32),
                                            (torch.bfloat16, torch.bfloat16),
                                            (torch.float16, torch.bfloat16)])  # fmt: skip
def test_dtype_pairings_convert_like_the_plain_loader(tmp_path, saved, run):
    make_checkpoint(tmp_path, "qwen2", seed=3)
    file = tmp_path / "model.safetensors"
    save_file({k: v.to(saved) for k, v in load_file(file).items()}, file)
    weights = load_weights(tmp_path, run, CPU)
    weights.wait()
    assert_same_model(weights.model, load_model(tmp_path, run, "cpu"))
    # Views when the dtypes agree (the arena is the parameters' memory), copies otherwise.
    assert (weights.stream.arena is not None) == (saved == run)


def test_sharded_checkpoint_streams_every_shard(tmp_path):
    make_checkpoint(tmp_path, "llama", seed=4)
    weights = load_file(tmp_path / "model.safetensors")
    names = sorted(weights)
    parts = {"a.safetensors": names[::2], "b.safetensors": names[1::2]}
    for fname, part in parts.items():
        save_file({n: weights[n] for n in part}, tmp_path / fname)
    (tmp_path / "model.safetensors").unlink()
    index = {"weight_map": {n: f for f, part in parts.items() for n in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    streamed = load_weights(tmp_path, torch.float32, CPU)
    streamed.wait()
    assert len(streamed.stream.plan.files) == 2
    assert_same_model(streamed.model, load_model(tmp_path))


def test_an_early_stream_is_taken_by_a_matching_engine_only(tmp_path, monkeypatch):
    make_checkpoint(tmp_path / "a", "llama", seed=1)
    make_checkpoint(tmp_path / "b", "llama", seed=2)
    early = weight_stream.WeightStream(tmp_path / "a", "cpu")  # as start_early leaves it
    monkeypatch.setattr(weight_stream, "_early", early)
    weights = load_weights(tmp_path / "a", torch.float32, CPU)
    assert weights.stream is early and weights.early and weight_stream._early is None
    weights.wait()
    assert weights.figures["early"] == 1.0

    other = weight_stream.WeightStream(tmp_path / "b", "cpu")
    monkeypatch.setattr(weight_stream, "_early", other)
    weights = load_weights(tmp_path / "a", torch.float32, CPU)  # not the early stream's model
    assert weights.stream is not other and not weights.early and other.arena is None
    weights.wait()
    assert_same_model(weights.model, load_model(tmp_path / "a"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a host without a GPU")
def test_cpu_engines_stream_after_the_import(tmp_path):
    """Reading beside torch's import slowed a CPU start on the 2-core machine: no early
    stream for --device cpu, and "auto" without a GPU stops at once."""
    make_checkpoint(tmp_path, "llama", seed=1)
    assert weight_stream.start_early(str(tmp_path), "cpu") is None
    early = weight_stream.start_early(str(tmp_path), "auto")
    with pytest.raises(weight_stream.NoGPU):
        early.ready()
    assert early.arena is None
    weights = load_weights(tmp_path, torch.float32, CPU)
    assert weights.stream is not early and not weights.early
    weights.wait()
    assert weights.figures["threads"] == min(8, os.cpu_count())
    assert_same_model(weights.model, load_model(tmp_path))


def test_no_early_stream_for_a_folder_that_is_not_there(tmp_path):
    assert weight_stream.start_early(str(tmp_path / "nothing"), "cpu") is None
    assert weight_stream.checkpoint_folder(str(tmp_path)) is None  # no config.json


def test_turned_off_the_plain_loader_reads(tmp_path, monkeypatch):
    make_checkpoint(tmp_path, "llama", seed=1)
    monkeypatch.setenv("KILN_WEIGHT_STREAM", "0")
    assert weight_stream.start_early(str(tmp_path), "cpu") is None
    weights = load_weights(tmp_path, torch.float32, CPU)
    assert weights.stream is None and weights.figures["streamed"] == 0.0
    assert weights.reason == "KILN_WEIGHT_STREAM=0"


def test_mixed_dtypes_in_one_parameter_fall_back_to_the_plain_loader(tmp_path):
    make_checkpoint(tmp_path, "llama", seed=1)
    file = tmp_path / "model.safetensors"
    weights = load_file(file)
    name = "model.layers.0.mlp.up_proj.weight"
    weights[name] = weights[name].to(torch.bfloat16)
    save_file(weights, file)
    loaded = load_weights(tmp_path, torch.float32, CPU)
    assert loaded.stream is None and "different dtypes" in loaded.reason
    assert_same_model(loaded.model, load_model(tmp_path))


def test_a_missing_shard_is_named(tmp_path):
    make_checkpoint(tmp_path, "llama", seed=1)
    index = {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(KilnError, match="missing: model-00002-of-00002.safetensors"):
        load_weights(tmp_path, torch.float32, CPU)


def test_a_read_that_comes_up_short_is_named_at_wait(tmp_path, monkeypatch):
    make_checkpoint(tmp_path, "llama", seed=1)
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: 0)
    weights = load_weights(tmp_path, torch.float32, CPU)
    with pytest.raises(KilnError, match="model.safetensors ended early"):
        weights.wait()


def test_the_engine_generates_the_same_tokens_either_way(monkeypatch):
    from kiln.llm import LLM
    from runtime.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=6, temperature=0.0)
    streamed = LLM("demo", compile="never").generate(["hello there"], params)[0].token_ids
    monkeypatch.setenv("KILN_WEIGHT_STREAM", "0")
    plain = LLM("demo", compile="never").generate(["hello there"], params)[0].token_ids
    assert streamed == plain


class _FakeDriver:
    """The driver calls the GPU arena makes, on host memory. A copy runs only when an event
    after it (or its stream) is synchronized, as on a GPU, so a staging buffer refilled before
    its copy finished would show up as wrong bytes."""

    def __init__(self):
        import ctypes

        self.ctypes, self.blocks, self.queues, self.marks = ctypes, {}, {}, {}

    def primary_context(self, ordinal):
        return 1

    def current_context(self):
        return None

    def set_current(self, ctx):
        assert ctx in (1, None)  # the arena's context, or none (a thread's own, restored)

    def mem_alloc(self, nbytes):
        buf = self.ctypes.create_string_buffer(nbytes)
        self.blocks[self.ctypes.addressof(buf)] = buf
        return self.ctypes.addressof(buf)

    host_alloc = mem_alloc

    def mem_free(self, ptr):
        del self.blocks[ptr]

    host_free = mem_free

    def stream_create(self):
        self.queues[len(self.queues) + 1] = []
        return len(self.queues)

    def copy_to_device(self, dst, src, nbytes, stream):
        self.queues[stream].append((dst, src, nbytes))

    def event_create(self, timing=False):
        self.marks[len(self.marks) + 1] = None
        return len(self.marks)

    def event_record(self, event, stream):
        self.marks[event] = (stream, len(self.queues[stream]))

    def _run(self, stream, upto):
        queue = self.queues[stream]
        for i, (dst, src, n) in enumerate(queue[:upto]):
            if n:
                self.ctypes.memmove(dst, src, n)
            queue[i] = (dst, src, 0)  # done

    def event_sync(self, event):
        self._run(*self.marks[event])

    def stream_sync(self, stream):
        self._run(stream, len(self.queues[stream]))

    def event_seconds(self, start, end):
        return 1e-4

    def stream_destroy(self, stream):
        assert all(n == 0 for _, _, n in self.queues[stream])

    def event_destroy(self, event):
        pass


def test_gpu_arena_double_buffering_on_a_fake_driver(tmp_path, monkeypatch):
    import ctypes

    from runtime import cuda_driver

    make_checkpoint(tmp_path, "qwen2", seed=9)
    fake = _FakeDriver()
    monkeypatch.setattr(cuda_driver, "Driver", lambda: fake)
    monkeypatch.setattr(weight_stream, "CHUNK", 1000)  # many refills of each staging buffer
    stream = weight_stream.WeightStream(tmp_path, "cuda:0", threads=2)
    stats = stream.wait()
    assert stream.device == "cuda:0" and stats.h2d_s > 0
    plan, arena = stream.ready()
    got = ctypes.string_at(arena.ptr, arena.nbytes)
    want = dict(load_model(tmp_path).named_parameters())
    for slot in plan.params:
        tensor = want[slot.name].detach().contiguous().view(torch.uint8).flatten()
        assert got[slot.offset : slot.offset + slot.nbytes] == bytes(tensor.tolist()), slot.name
    blocks, ptr = set(fake.blocks), arena.ptr
    stream.discard()
    assert blocks - set(fake.blocks) == {ptr}  # the staging buffers were freed earlier


def test_a_shard_gone_after_planning_is_named_at_wait(tmp_path, monkeypatch):
    make_checkpoint(tmp_path, "llama", seed=1)

    def gone(path, flags, *args):
        raise FileNotFoundError(2, "No such file or directory", str(path))

    monkeypatch.setattr(os, "open", gone)  # the stream's own open, after the headers were read
    weights = load_weights(tmp_path, torch.float32, CPU)
    with pytest.raises(KilnError, match="reading the weights failed: .*model.safetensors"):
        weights.wait()


def test_device_arena_view_frees_the_arena_with_it_and_restores_the_context(monkeypatch):
    """What torch holds for the arena's tensors (`_DeviceBytes`) frees the arena when torch
    lets it go, on a thread whose current context may belong to another device."""
    from runtime.weight_stream import CudaArena
    from runtime.weights import _DeviceBytes

    fake = _FakeDriver()
    calls = []
    monkeypatch.setattr(fake, "current_context", lambda: 7, raising=False)
    monkeypatch.setattr(fake, "set_current", calls.append, raising=False)
    arena = CudaArena(fake, 1, 0, 4096)
    ptr = arena.ptr
    view = _DeviceBytes(arena)
    assert view.__cuda_array_interface__["data"] == (ptr, False)
    assert ptr in fake.blocks
    calls.clear()
    del view
    assert arena.ptr == 0 and ptr not in fake.blocks
    assert calls == [1, 7]  # the arena's context for the free, then the thread's own again
    arena.free()  # a second free (the stream discarding it) is a no-op
    assert calls == [1, 7]


def test_a_failed_load_abandons_the_stream_before_the_model_goes(monkeypatch):
    """A loader that raises while the copies may still run: the stream is discarded (its
    threads joined, then its arena freed) before the error leaves `load`, so the model's
    views dying later cannot free memory a copy still writes to."""
    import pytest

    from kiln.config import EngineConfig
    from runtime import startup
    from runtime.weights import Weights

    abandoned = []
    original = Weights.abandon

    def record(self):
        abandoned.append(self.stream)
        original(self)

    monkeypatch.setattr(Weights, "abandon", record)

    class Failing:
        reads_weights = False

        def load(self, model, phases):
            raise RuntimeError("no kernels for this target")

    with pytest.raises(RuntimeError, match="no kernels"):
        startup.load(EngineConfig("demo", compile="never"), Failing())
    assert len(abandoned) == 1
    stream = abandoned[0]
    if stream is not None:  # the stream read the demo: its threads are done, its arena gone
        assert not stream._thread.is_alive() and stream.arena is None


def test_a_viewed_arena_outlives_the_streams_discard(tmp_path, monkeypatch):
    """Once torch views the arena its views own it: discarding the stream (a finished
    conversion that kept some views, or an abandoned load) leaves the memory to them."""
    from runtime import cuda_driver
    from runtime.weights import _DeviceBytes

    make_checkpoint(tmp_path, "qwen2", seed=9)
    fake = _FakeDriver()
    monkeypatch.setattr(cuda_driver, "Driver", lambda: fake)
    stream = weight_stream.WeightStream(tmp_path, "cuda:0", threads=2)
    stream.wait()
    _, arena = stream.ready()
    ptr = arena.ptr
    view = _DeviceBytes(arena)
    arena.viewed = True  # as arena_tensor marks it
    stream.discard()
    assert stream.arena is None and ptr in fake.blocks and arena.ptr == ptr
    del view
    assert arena.ptr == 0 and ptr not in fake.blocks
