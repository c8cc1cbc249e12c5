"""The engine end to end on the demo model: batching invariance, preemption, seeds, stops."""

from __future__ import annotations

import random

import pytest

from kiln.llm import LLM
from runtime.sampling_params import SamplingParams

BLOCK = 16
DEMO_BLOCK_BYTES = 65536  # 2 (k, v) * 16 tokens * 4 kv heads * 32 dims * 4 bytes * 4 layers


def prompts16() -> list[list[int]]:
    rng = random.Random(7)
    shared = [rng.randrange(3, 500) for _ in range(40)]  # a shared prefix: prefix-cache hits
    out = []
    for i in range(16):
        n = rng.choice([1, 3, 17, 33, 60])
        tail = [rng.randrange(3, 500) for _ in range(n)]
        out.append(shared + tail if i % 3 == 0 else tail)
    return out


GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def alone():
    llm = LLM("demo", enable_prefix_caching=False)
    return [llm.generate([p], GREEDY)[0].token_ids for p in prompts16()]


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_batched_equals_alone(alone, prefix_caching):
    llm = LLM("demo", enable_prefix_caching=prefix_caching, max_num_batched_tokens=64)
    got = [c.token_ids for c in llm.generate(prompts16(), GREEDY)]
    assert got == alone
    if prefix_caching:
        assert llm.engine.stats()["prefix_cache_hit_rate"] > 0


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_preemption_keeps_results(alone, prefix_caching):
    llm = LLM(
        "demo",
        enable_prefix_caching=prefix_caching,
        max_model_len=128,
        kv_cache_memory=10 * DEMO_BLOCK_BYTES,
        max_num_batched_tokens=64,
        max_num_seqs=16,
    )
    got = [c.token_ids for c in llm.generate(prompts16(), GREEDY)]
    assert llm.engine.stats()["num_preemptions"] > 0
    assert got == alone
    stats = llm.engine.stats()
    assert stats["num_running"] == stats["num_waiting"] == 0 and stats["kv_blocks_used"] == 0


def test_seeded_sampling_reproducible_across_runs_and_batches():
    llm = LLM("demo")
    p = SamplingParams(
        max_tokens=20, temperature=1.0, top_p=0.9, top_k=50, seed=1234, ignore_eos=True
    )
    first = llm.generate(["the seed"], p)[0].token_ids
    again = llm.generate(["the seed"], p)[0].token_ids
    others = [
        SamplingParams(max_tokens=20, temperature=1.0, seed=s, ignore_eos=True) for s in range(4)
    ]
    mixed = llm.generate(["x y z", "the seed", "a", "bb"], [others[0], p, others[1], others[2]])
    assert first == again == mixed[1].token_ids
    unseeded = llm.generate(["the seed"] * 2, SamplingParams(max_tokens=20, ignore_eos=True))
    assert first != unseeded[0].token_ids or first != unseeded[1].token_ids


def test_stop_string_spanning_tokens_is_cut():
    llm = LLM("demo")
    full = llm.generate(
        ["stop test"], SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    )[0]
    text = full.text
    # Choose a stop string that starts inside one token and ends inside a later one.
    tok = llm.engine.tokenizer
    pieces = [tok.decode(full.token_ids[:i]) for i in range(len(full.token_ids) + 1)]
    boundaries = [len(p) for p in pieces if text.startswith(p) and "\ufffd" not in p]
    start = next(
        b - 1
        for a, b in zip(boundaries, boundaries[1:])
        if b > a and b >= 1 and b + 2 <= len(text) and text.find(text[b - 1 : b + 2]) == b - 1
    )
    stop = text[start : start + 3]
    cut = llm.generate(
        ["stop test"], SamplingParams(max_tokens=24, temperature=0, stop=(stop,), ignore_eos=True)
    )[0]
    assert cut.finish_reason == "stop"
    assert cut.text == text[:start]
    assert stop not in cut.text


def test_length_finish_and_eos_handling():
    llm = LLM("demo")
    out = llm.generate(["abc"], SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 5


def test_logprobs_reported_per_token():
    llm = LLM("demo")
    out = llm.generate(
        ["abc"], SamplingParams(max_tokens=4, temperature=0, logprobs=3, ignore_eos=True)
    )[0]
    assert len(out.logprobs) == 4
    for tok, lp in zip(out.token_ids, out.logprobs):
        assert lp.token_id == tok and lp.logprob <= 0
        assert len(lp.top) == 3 and lp.top[0][0] == tok  # greedy: the best is the sampled one
