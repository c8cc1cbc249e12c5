"""benchmarks/gpu_shapes.py: what its engine benchmark times is what it says it times."""

from __future__ import annotations

import pytest

from benchmarks.gpu_shapes import bench_engine, run_prompts
from kiln.config import EngineConfig
from kiln.resolve import build_engine


@pytest.fixture(scope="module")
def engine():
    """The demo model, eager on the CPU, with prefix caching on (the engine's default)."""
    return build_engine(EngineConfig(model="demo", compile="never", max_model_len=512))


def test_timed_prefill_computes_every_prompt_token_with_prefix_caching_on(engine):
    """Regression: the timed run repeated the warm-up's prompt, so the prefix cache served all
    but its last block and "prefill_2048" timed one block's prefill."""
    blocks = engine.scheduler.block_manager
    queries, hits = blocks.num_prefix_queries, blocks.num_prefix_hits
    row = bench_engine(engine, 1, 64, 2)
    assert blocks.num_prefix_queries - queries == 2 * 64  # warm-up and timed prompt looked up
    assert blocks.num_prefix_hits == hits  # and neither found in the cache
    assert row["ttft_s"] > 0 and row["batch"] == 1


def test_decode_prompts_are_not_the_start_of_the_prefill_prompt():
    prefill = run_prompts(1, 2048, 1, 128256)[0]
    for batch in (1, 32):
        for run in (0, 1):
            assert all(p[:16] != prefill[:16] for p in run_prompts(batch, 128, run, 128256))
    assert run_prompts(1, 2048, 0, 128256) != [prefill]  # warm-up and timed differ
    assert run_prompts(1, 2048, 1, 128256) == [prefill]  # the same on every engine
