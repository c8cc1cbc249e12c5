"""Decode CUDA graphs: buckets, harmless padding, attention routing, and replay == eager (GPU)."""

from __future__ import annotations

import random

import pytest
import torch

from model_defs.demo import ensure_demo_checkpoint
from model_defs.loader import load_model
from model_defs.registry import read_config
from runtime import cuda_graphs
from runtime.cuda_graphs import (
    CUDAGraphConfig,
    CUDAGraphRunner,
    StaticDecodeInputs,
    _RouteAttention,
    batch_buckets,
    graphs_unavailable_reason,
)
from runtime.kv_cache import allocate_kv_caches
from runtime.model_runner import ModelRunner, StepSeq, prepare_inputs

BLOCK = 16
NUM_BLOCKS = 64


def test_buckets_are_powers_of_two_then_the_maximum():
    assert batch_buckets(1) == (1,)
    assert batch_buckets(8) == (1, 2, 4, 8)
    assert batch_buckets(6) == (1, 2, 4, 6)
    assert batch_buckets(64)[-3:] == (16, 32, 64)


@pytest.mark.parametrize("field", ["max_batch_size", "max_blocks_per_seq"])
def test_config_rejects_non_positive_sizes(field):
    kw = {"max_batch_size": 4, "max_blocks_per_seq": 8, field: 0}
    with pytest.raises(ValueError, match=f"{field}=0 must be an integer >= 1"):
        CUDAGraphConfig(**kw)


def test_unavailable_reasons(monkeypatch):
    cfg, cuda = CUDAGraphConfig(8, 4), torch.device("cuda")
    assert graphs_unavailable_reason(CUDAGraphConfig(8, 4, enforce_eager=True), cuda, "triton")
    assert "cpu" in graphs_unavailable_reason(cfg, torch.device("cpu"), "reference")
    assert graphs_unavailable_reason(cfg, cuda, "triton") is None
    assert "not known to be capturable" in graphs_unavailable_reason(cfg, cuda, "native")
    assert graphs_unavailable_reason(cfg, cuda, "reference") is None  # Triton kernel importable
    monkeypatch.setattr(cuda_graphs, "_triton_attention", lambda: (None, "no triton here"))
    why = graphs_unavailable_reason(cfg, cuda, "reference")
    assert ".item()" in why and "no triton here" in why


# --- the demo model, for padding and routing checks -------------------------------------------
def _demo(device: str, dtype=torch.float32):
    path = ensure_demo_checkpoint()
    _, cfg = read_config(path)
    model = load_model(path, dtype, device)
    kv = allocate_kv_caches(cfg, NUM_BLOCKS, BLOCK, dtype, device)
    for k, v in kv:  # random, non-zero: a stray write or read of a pad row would show
        k.normal_()
        v.normal_()
    return model, ModelRunner(model, model.compute_logits, kv, BLOCK, device)


def _prefilled_decode_batch(runner: ModelRunner, n: int, seed: int) -> list[StepSeq]:
    """Prefill n random prompts (distinct blocks), return their next decode step."""
    rng = random.Random(seed)
    blocks = iter(rng.sample(range(NUM_BLOCKS), NUM_BLOCKS))
    batch = []
    for _ in range(n):
        length = rng.randrange(3, 40)
        table = [next(blocks) for _ in range(length // BLOCK + 1)]
        prompt = [rng.randrange(3, 500) for _ in range(length)]
        runner.execute([StepSeq(prompt, 0, table, True)])
        batch.append(StepSeq([rng.randrange(3, 500)], length, table, True))
    return batch


def _clone_kv(kv):
    return [(k.clone(), v.clone()) for k, v in kv]


def _restore_kv(kv, saved):
    for (k, v), (k0, v0) in zip(kv, saved, strict=True):
        k.copy_(k0)
        v.copy_(v0)


@torch.inference_mode()
def test_padded_static_inputs_match_unpadded_and_write_no_kv():
    model, runner = _demo("cpu")
    batch = _prefilled_decode_batch(runner, 3, seed=1)
    before = _clone_kv(runner.kv_caches)
    want = runner.execute(batch)
    after_eager = _clone_kv(runner.kv_caches)
    _restore_kv(runner.kv_caches, before)

    static = StaticDecodeInputs(max_batch_size=8, max_blocks_per_seq=8, device=torch.device("cpu"))
    stale = _prefilled_decode_batch(_demo("cpu")[1], 8, seed=2)  # rows 3..7 hold a stale batch
    static.fill(prepare_inputs(stale, BLOCK, "cpu"), 8, 8)
    static.fill(prepare_inputs(batch, BLOCK, "cpu"), 3, 4)
    assert static.slot_mapping[3:4].tolist() == [-1]
    assert static.query_start_loc[:5].tolist() == [0, 1, 2, 3, 3]
    assert static.seq_lens[3:4].tolist() == [0] and not static.block_tables[3:4].any()
    ids, pos, attn = static.views(4)
    got = model.compute_logits(model(ids, pos, attn, runner.kv_caches))  # [4, V]
    torch.testing.assert_close(got[:3], want, rtol=1e-4, atol=1e-4)
    for (k, v), (k1, v1) in zip(runner.kv_caches, after_eager, strict=True):
        torch.testing.assert_close(k, k1, rtol=1e-5, atol=1e-5)  # pad row wrote nothing
        torch.testing.assert_close(v, v1, rtol=1e-5, atol=1e-5)


@torch.inference_mode()
def test_route_attention_sends_every_layer_to_the_given_impl():
    from ir.ops.attention import attention as reference

    model, runner = _demo("cpu")
    batch = _prefilled_decode_batch(runner, 2, seed=3)
    inp = prepare_inputs(batch, BLOCK, "cpu")
    before = _clone_kv(runner.kv_caches)
    want = model(inp.input_ids, inp.positions, inp.attn, runner.kv_caches)
    _restore_kv(runner.kv_caches, before)
    calls = []

    def counting(*args):
        calls.append(args[0].shape)
        return reference(*args)

    with _RouteAttention(counting):
        got = model(inp.input_ids, inp.positions, inp.attn, runner.kv_caches)
    assert len(calls) == model.cfg.num_layers and calls[0][0] == 2
    torch.testing.assert_close(got, want)


@torch.inference_mode()
def test_cpu_runner_stays_eager_and_matches_model_runner():
    model, runner = _demo("cpu")
    batch = _prefilled_decode_batch(runner, 3, seed=4)
    cfg = CUDAGraphConfig(max_batch_size=8, max_blocks_per_seq=8)
    graphs = CUDAGraphRunner(model, model.compute_logits, runner.kv_caches, cfg, "cpu")
    assert not graphs.enabled and "cpu" in graphs.disabled_reason
    assert graphs.capture() == 0.0 and graphs.bucket_for(batch) is None
    before = _clone_kv(runner.kv_caches)
    want = runner.execute(batch)
    _restore_kv(runner.kv_caches, before)
    got = graphs.execute(batch, prepare_inputs(batch, BLOCK, "cpu"))
    torch.testing.assert_close(got, want)


# --- on the GPU ---------------------------------------------------------------------------------
@pytest.mark.gpu
@torch.inference_mode()
@pytest.mark.parametrize("n, bucket", [(1, 1), (3, 4), (8, 8)])
def test_graph_replay_matches_eager_logits(n, bucket):
    model, runner = _demo("cuda")
    cfg = CUDAGraphConfig(max_batch_size=8, max_blocks_per_seq=8)
    graphs = CUDAGraphRunner(model, model.compute_logits, runner.kv_caches, cfg, "cuda")
    assert graphs.enabled, graphs.disabled_reason
    assert graphs.capture() > 0 and sorted(graphs.graphs) == [1, 2, 4, 8]
    batch = _prefilled_decode_batch(runner, n, seed=10 + n)
    assert graphs.bucket_for(batch) == bucket
    before = _clone_kv(runner.kv_caches)
    want = runner.execute(batch)  # eager, reference attention
    after_eager = _clone_kv(runner.kv_caches)
    _restore_kv(runner.kv_caches, before)
    got = graphs.execute(batch, prepare_inputs(batch, BLOCK, "cuda"))
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    for (k, v), (k1, v1) in zip(runner.kv_caches, after_eager, strict=True):
        torch.testing.assert_close(k, k1, rtol=1e-4, atol=1e-4)  # same writes, none from pads
        torch.testing.assert_close(v, v1, rtol=1e-4, atol=1e-4)
    # A prefill step is not graphed and still runs (eagerly) through the same runner.
    prefill = [StepSeq([5, 6, 7], 0, [NUM_BLOCKS - 1], True)]
    assert graphs.bucket_for(prefill) is None
    assert graphs.execute(prefill, prepare_inputs(prefill, BLOCK, "cuda")).shape[0] == 1


@pytest.mark.gpu
@torch.inference_mode()
def test_replays_of_different_buckets_do_not_clobber_returned_logits():
    model, runner = _demo("cuda")
    cfg = CUDAGraphConfig(max_batch_size=8, max_blocks_per_seq=8)
    graphs = CUDAGraphRunner(model, model.compute_logits, runner.kv_caches, cfg, "cuda")
    graphs.capture()
    big = _prefilled_decode_batch(runner, 8, seed=20)
    first = graphs.execute(big, prepare_inputs(big, BLOCK, "cuda"))
    kept = first.clone()
    graphs.execute(big[:2], prepare_inputs(big[:2], BLOCK, "cuda"))
    assert torch.equal(first, kept)
