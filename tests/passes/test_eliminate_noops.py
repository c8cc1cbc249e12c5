"""EliminateNoops removes reshapes/slices/copies that change nothing and keeps real ones."""

from __future__ import annotations

from pass_checks import assert_same_numerics, counts, passed

from passes.base import Pass
from passes.eliminate_noops import EliminateNoops
from passes.graph import aten, infer_meta


class InjectNoops(Pass):
    """Test helper: after the embedding, add a same-shape reshape, a full slice and a clone."""

    name = "inject_noops"
    description = "test only"

    def __call__(self, gm, ctx) -> int:
        graph = gm.graph
        embed = next(n for n in graph.nodes if n.target is aten.embedding.default)
        users = list(embed.users)
        with graph.inserting_after(embed):
            size = graph.call_function(aten.sym_size.int, (embed, 0))
        with graph.inserting_after(size):
            reshape = graph.call_function(
                aten.reshape.default, (embed, [size, embed.meta["val"].shape[1]])
            )
        with graph.inserting_after(reshape):
            sliced = graph.call_function(aten.slice.Tensor, (reshape, 1, 0, 2**62))
        with graph.inserting_after(sliced):
            copy = graph.call_function(aten.clone.default, (sliced,))
        for node in (size, reshape, sliced, copy):
            infer_meta(node)
        for user in users:
            user.replace_input_with(embed, copy)
        return 4


def test_removes_injected_noops_only(llama):
    injected, _ = passed(llama, [InjectNoops()])
    cleaned, trace = passed(llama, [InjectNoops(), EliminateNoops()])
    before, after = counts(injected), counts(cleaned)
    assert before["aten.slice"] == 1 and before["aten.clone"] == 1
    assert after["aten.slice"] == 0 and after["aten.clone"] == 0
    # The injected reshape goes; every reshape that splits or merges heads stays.
    assert after["aten.reshape"] == before["aten.reshape"] - 1 == 4 * llama.cfg.num_layers
    assert trace.rewrites("eliminate_noops") >= 3
    assert_same_numerics(cleaned, injected, llama, atol=0, rtol=0)


def test_captured_model_has_nothing_to_remove(qwen3):
    forward, trace = passed(qwen3, [EliminateNoops()])
    assert trace.rewrites("eliminate_noops") == 0
    record = trace.passes[0]
    assert record.nodes_before == record.nodes_after
