"""PadForKernels: zero-pads intermediate and vocab sizes, buckets T; numerics unchanged."""

from __future__ import annotations

import pytest
import torch
from hf_models import make_checkpoint
from pass_checks import assert_same_numerics, counts, passed, run_with_caches

from model_defs.loader import load_model
from passes.config import PassConfig
from passes.pad_for_kernels import PadForKernels


@pytest.fixture(scope="module")
def odd_vocab_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("odd-vocab")
    make_checkpoint(path, "llama", seed=3, vocab_size=300, intermediate_size=160)
    return load_model(path)


def test_pads_intermediate_and_vocab(odd_vocab_llama):
    model = odd_vocab_llama
    before, _ = passed(model, [])
    after, trace = passed(model, [PadForKernels()])
    assert trace.rewrites("pad_for_kernels") == model.cfg.num_layers + 1  # MLPs + LM head
    assert after.weights["p_layers_0_mlp_gate_up_proj_weight"].shape == (2 * 192, 64)
    assert after.weights["p_layers_0_mlp_down_proj_weight"].shape == (64, 192)
    assert after.lm_head.shape == (320, 64)
    assert counts(after) == counts(before)  # the pad/slice lives in the weights
    assert_same_numerics(after, before, model)
    hidden, _ = run_with_caches(after, model, [5, 2])
    logits = after.compute_logits(hidden)
    assert logits.shape == (7, 300)
    torch.testing.assert_close(logits, model.compute_logits(hidden), atol=1e-5, rtol=1e-5)


def test_token_count_is_padded_to_buckets(llama):
    after, _ = passed(llama, [PadForKernels()], PassConfig(token_buckets=(4, 16)))
    assert after.token_buckets == (4, 16)
    seen = []
    handle = after.gm.register_forward_hook(lambda mod, args, out: seen.append(out[0].shape[0]))
    before, _ = passed(llama, [])
    assert_same_numerics(after, before, llama, batches=([1], [7], [5, 1, 3], [17]))
    handle.remove()
    # Prefill batches of 1, 7, 9 and 17 tokens ran as 4, 16, 16 and 17 (past the last bucket).
    assert seen == [4, 16, 16, 17]


def test_no_padding_when_sizes_are_aligned(llama):
    _, trace = passed(llama, [PadForKernels()], PassConfig(pad_multiple=32))
    assert trace.rewrites("pad_for_kernels") == 0  # 160 and 320 are multiples of 32
