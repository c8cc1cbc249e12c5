"""A load that leaves its step CUDA graphs for later, as `kiln serve`'s engine core loads
(runtime/startup.py `defer_graph_capture`), on the GPU."""

from __future__ import annotations

import pytest

from kiln.config import EngineConfig
from kiln.resolve import build_engine
from runtime.sampling_params import SamplingParams

pytestmark = pytest.mark.gpu


def _greedy_tokens(engine, rid: str) -> list[int]:
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    engine.add_request(rid, [5, 6, 7, 8], params)
    tokens = []
    while engine.has_unfinished():
        for out in engine.step():
            tokens += out.new_token_ids
    return tokens


def test_a_deferred_load_decodes_eagerly_until_its_graphs_are_captured():
    config = EngineConfig("demo", compile="never", device="cuda", max_model_len=256,
                          max_num_seqs=4, gpu_memory_utilization=0.2)  # fmt: skip
    engine = build_engine(config, defer_graph_capture=True)
    loaded, graphs = engine.loaded, engine.loaded.runner.graphs
    assert loaded.graphs_pending and "graph_capture" not in loaded.phases
    assert graphs.enabled and not graphs.graphs, graphs.disabled_reason
    eager = _greedy_tokens(engine, "before")
    # every step size up to the token budget: powers of two, max_num_seqs and the budget
    assert loaded.capture_graphs() > 0 and sorted(graphs.graphs) == list(graphs.config.buckets)
    assert graphs.config.buckets[:4] == (1, 2, 4, 8) and graphs.config.buckets[-1] == 256
    assert not loaded.graphs_pending and loaded.capture_graphs() == 0.0
    assert _greedy_tokens(engine, "after") == eager
