"""Step CUDA graphs: buckets, harmless padding, attention routing, replay == eager (GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from decode_fixtures import (
    BLOCK,
    NUM_BLOCKS,
    clone_kv,
    demo,
    max_kv_diff,
    prefilled_decode_batch,
    prefilled_mixed_batch,
    restore_kv,
)

from model_defs.step_inputs import StepSeq, prepare_inputs
from runtime import cuda_graphs
from runtime.cuda_graphs import (
    CUDAGraphConfig,
    CUDAGraphRunner,
    StaticStepInputs,
    _RouteOps,
    batch_buckets,
    graphs_unavailable_reason,
)

WORKER = Path(__file__).with_name("graph_padding_worker.py")


def test_buckets_are_powers_of_two_then_the_maximum():
    assert batch_buckets(1) == (1,)
    assert batch_buckets(8) == (1, 2, 4, 8)
    assert batch_buckets(6) == (1, 2, 4, 6)
    assert batch_buckets(64)[-3:] == (16, 32, 64)


def test_token_buckets_cover_decode_batches_then_the_step_budget():
    assert CUDAGraphConfig(8, 4).buckets == (1, 2, 4, 8)  # decode only
    cfg = CUDAGraphConfig(48, 4, max_num_tokens=512)
    assert cfg.buckets == (1, 2, 4, 8, 16, 32, 48, 64, 128, 256, 512)
    assert [cfg.seqs(b) for b in (4, 48, 64, 512)] == [4, 48, 48, 48]
    assert CUDAGraphConfig(8, 4, max_num_tokens=100).buckets[-3:] == (32, 64, 100)
    assert CUDAGraphConfig(8, 4, max_num_tokens=4).buckets == (1, 2, 4, 8)  # decodes still fit


@pytest.mark.parametrize("field", ["max_batch_size", "max_blocks_per_seq", "max_num_tokens"])
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
    monkeypatch.setattr(cuda_graphs, "_uncapturable", lambda: "no triton here")
    why = graphs_unavailable_reason(cfg, cuda, "reference")
    assert ".item()" in why and "no triton here" in why


# --- the demo model: padding and routing, eagerly on the CPU ----------------------------------
@torch.inference_mode()
@pytest.mark.parametrize("kind", ["decode", "mixed"])
def test_padded_static_inputs_match_unpadded_and_write_no_kv(kind):
    model, runner = demo("cpu")
    if kind == "decode":
        batch, bucket = prefilled_decode_batch(runner, 3, seed=1), 4
    else:  # 3 decodes, a 21-token chunk without logits, a 9-token prompt: 33 tokens
        batch, bucket = prefilled_mixed_batch(runner, 3, seed=2), 64
    before = clone_kv(runner.kv_caches)
    want = runner.execute(batch)
    after_eager = clone_kv(runner.kv_caches)
    restore_kv(runner.kv_caches, before)

    static = StaticStepInputs(CUDAGraphConfig(8, 8, max_num_tokens=64), torch.device("cpu"))
    stale = [StepSeq([7 + i] * 8, 10 + i, [i, i + 8], True) for i in range(8)]  # every row set
    static.fill(stale, BLOCK, 64)
    assert static.fill(batch, BLOCK, bucket) == sum(s.needs_logits for s in batch)
    inp = prepare_inputs(batch, BLOCK, "cpu")
    tokens, n, s = inp.input_ids.shape[0], len(batch), min(bucket, 8)
    ids, pos, attn, rows = static.views(bucket)
    assert torch.equal(ids[:tokens], inp.input_ids) and torch.equal(pos[:tokens], inp.positions)
    assert torch.equal(attn.slot_mapping[:tokens], inp.attn.slot_mapping)
    assert attn.slot_mapping[tokens:].eq(-1).all() and ids[tokens:].eq(0).all()
    assert attn.query_start_loc[n + 1 :].eq(tokens).all() and attn.seq_lens[n:].eq(0).all()
    width = inp.attn.block_tables.shape[1]
    assert torch.equal(attn.block_tables[:n, :width], inp.attn.block_tables)
    m = inp.logits_indices.shape[0]
    assert torch.equal(rows[:m], inp.logits_indices) and rows[m:].eq(0).all()
    ids, pos, attn, rows = static.views(bucket)
    assert ids.shape[0] == bucket and attn.seq_lens.shape[0] == s and rows.shape[0] == s
    got = model.compute_logits(model(ids, pos, attn, runner.kv_caches).index_select(0, rows))
    assert got.shape[0] == s
    torch.testing.assert_close(got[: len(want)], want, rtol=1e-4, atol=1e-4)
    assert max_kv_diff(runner.kv_caches, after_eager) < 1e-4  # padding wrote nothing


@torch.inference_mode()
def test_route_attention_sends_every_layer_to_the_given_impl():
    from ir.registry import get_op

    reference = get_op("attention").reference

    model, runner = demo("cpu")
    batch = prefilled_decode_batch(runner, 2, seed=3)
    inp = prepare_inputs(batch, BLOCK, "cpu")
    before = clone_kv(runner.kv_caches)
    want = model(inp.input_ids, inp.positions, inp.attn, runner.kv_caches)
    restore_kv(runner.kv_caches, before)
    calls = []

    def counting(*args):
        calls.append(args[0].shape)
        return reference(*args)

    with _RouteOps({torch.ops.kiln.attention.default: counting}):
        got = model(inp.input_ids, inp.positions, inp.attn, runner.kv_caches)
    assert len(calls) == model.cfg.num_layers and calls[0][0] == 2
    torch.testing.assert_close(got, want)


def test_attention_quant_route_is_quant_of_the_routed_attention(monkeypatch):
    """Without a capturable kernel of its own, the fused op's stand-in keeps its spec:
    quant_fp8(attention(...).flatten(1)), with the routed attention inside."""
    import copy

    from ir.ops.paged_inputs import paged_inputs
    from ir.registry import get_op

    calls = []
    reference = get_op("attention").reference

    def counting(*args, **kwargs):
        calls.append(1)
        return reference(*args, **kwargs)

    import ir.registry
    from ir.registry import Impl

    stand_in = Impl("triton", counting, lambda target: None)
    found = ir.registry.capturable_impl
    routed = {"attention": stand_in, "attention_quant": None}
    monkeypatch.setattr(
        ir.registry, "capturable_impl", lambda op: routed[op] if op in routed else found(op)
    )
    route = cuda_graphs.capturable_routes()[torch.ops.kiln.attention_quant.default]
    args = paged_inputs([(3, 9), (1, 20)], num_heads=4, num_kv_heads=2, head_size=32,
                        block_size=BLOCK, dtype=torch.float32, num_padding=1)  # fmt: skip
    # The spec spelled out with attention's own reference (the op's reference dispatches to
    # whichever attention implementation this process has bound).
    want = get_op("quant_fp8").reference(reference(*copy.deepcopy(args)).flatten(1), 64)
    got = route(*args, group_size=64)
    assert calls == [1]
    assert got[0].dtype == want[0].dtype and torch.equal(got[1], want[1])
    assert torch.equal(got[0].float(), want[0].float())


@torch.inference_mode()
def test_cpu_runner_stays_eager_and_matches_model_runner():
    model, runner = demo("cpu")
    batch = prefilled_decode_batch(runner, 3, seed=4)
    cfg = CUDAGraphConfig(max_batch_size=8, max_blocks_per_seq=8)
    graphs = CUDAGraphRunner(model, model.compute_logits, runner.kv_caches, cfg, "cpu")
    assert not graphs.enabled and "cpu" in graphs.disabled_reason
    assert graphs.capture() == 0.0 and graphs.bucket_for(batch) is None
    before = clone_kv(runner.kv_caches)
    want = runner.execute(batch)
    restore_kv(runner.kv_caches, before)
    got = graphs.execute(batch, BLOCK)
    torch.testing.assert_close(got, want)


def test_padded_steps_through_triton_attention_in_the_interpreter():
    """The padding layout against the Triton kernel itself (CPU interpreter, own process), for a
    decode batch and for decodes mixed with prompts."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("HELION_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(WORKER.parent), os.getcwd(), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.run([sys.executable, str(WORKER)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind in ("decode", "mixed"):
        result = results[kind]
        assert result["logits_scale"] > 1.0 and result["logits_diff"] < 1e-4, kind
        assert result["pad_rows_finite"] and result["kv_diff"] < 1e-4, kind


# --- on the GPU ---------------------------------------------------------------------------------
@pytest.mark.gpu
@torch.inference_mode()
@pytest.mark.parametrize("n, bucket", [(1, 1), (3, 4), (8, 8)])
def test_graph_replay_matches_eager_logits(n, bucket):
    model, runner = demo("cuda")
    cfg = CUDAGraphConfig(max_batch_size=8, max_blocks_per_seq=8)
    graphs = CUDAGraphRunner(model, model.compute_logits, runner.kv_caches, cfg, "cuda")
    assert graphs.enabled, graphs.disabled_reason
    assert graphs.capture() > 0 and sorted(graphs.graphs) == [1, 2, 4, 8]
    batch = prefilled_decode_batch(runner, n, seed=10 + n)
    assert graphs.bucket_for(batch) == bucket
    before = clone_kv(runner.kv_caches)
    want = runner.execute(batch)  # eager, reference attention
    after_eager = clone_kv(runner.kv_caches)
    restore_kv(runner.kv_caches, before)
    got = graphs.execute(batch, BLOCK)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    assert max_kv_diff(runner.kv_caches, after_eager) < 1e-4  # same writes, none from pads
    # A step past the largest bucket still runs (eagerly) through the same runner.
    prefill = [StepSeq(list(range(5, 14)), 0, [NUM_BLOCKS - 1], True)]
    assert graphs.bucket_for(prefill) is None
    assert graphs.execute(prefill, BLOCK).shape[0] == 1


@pytest.mark.gpu
@torch.inference_mode()
def test_mixed_step_replay_matches_eager_logits():
    model, runner = demo("cuda")
    cfg = CUDAGraphConfig(max_batch_size=8, max_blocks_per_seq=8, max_num_tokens=64)
    graphs = CUDAGraphRunner(model, model.compute_logits, runner.kv_caches, cfg, "cuda")
    assert graphs.capture() > 0 and sorted(graphs.graphs) == [1, 2, 4, 8, 16, 32, 64]
    batch = prefilled_mixed_batch(runner, 3, seed=30)  # 33 tokens, 5 sequences, 4 with logits
    assert graphs.bucket_for(batch) == 64
    before = clone_kv(runner.kv_caches)
    want = runner.execute(batch)
    after_eager = clone_kv(runner.kv_caches)
    restore_kv(runner.kv_caches, before)
    got = graphs.execute(batch, BLOCK)
    assert got.shape == want.shape == (4, want.shape[1])
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    assert max_kv_diff(runner.kv_caches, after_eager) < 1e-4


@pytest.mark.gpu
@torch.inference_mode()
def test_replays_of_different_buckets_do_not_clobber_returned_logits():
    model, runner = demo("cuda")
    cfg = CUDAGraphConfig(max_batch_size=8, max_blocks_per_seq=8)
    graphs = CUDAGraphRunner(model, model.compute_logits, runner.kv_caches, cfg, "cuda")
    graphs.capture()
    big = prefilled_decode_batch(runner, 8, seed=20)
    # Bucket 2 was captured after bucket 8 in the shared pool, so its static output may sit in
    # memory that bucket 8 uses as scratch: what execute() returned must survive a replay of 8.
    small = graphs.execute(big[:2], BLOCK)
    kept = small.clone()
    graphs.execute(big, BLOCK)
    assert torch.equal(small, kept)
