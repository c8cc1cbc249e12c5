"""Piecewise lowering: the split into pieces, shared pieces across depth, numerics."""

from __future__ import annotations

import pytest
import torch

from tests.hf_models import make_checkpoint

SHAPE = dict(intermediate_size=128, vocab_size=320)


@pytest.fixture(scope="module")
def passed_by_depth(tmp_path_factory):
    """depth -> a fresh post-pass graph of a tiny llama of that many layers (fp32, CPU)."""
    from lowering.compile import pass_config
    from model_defs.loader import load_model
    from passes.compile import compile_graph

    paths = {}
    for depth in (4, 16):
        paths[depth] = tmp_path_factory.mktemp(f"llama{depth}")
        make_checkpoint(paths[depth], "llama", seed=depth, num_hidden_layers=depth, **SHAPE)

    def passed(depth: int):
        model = load_model(paths[depth])
        return compile_graph(model, pass_config(None, None), max_num_tokens=64)[0]

    return passed


def _split(passed):
    from lowering.piecewise import align_first_layer, distinct, split

    assert align_first_layer(passed.gm)
    pieces, results = split(passed.gm, passed.weights)
    return pieces, results, distinct(pieces)


def test_depth_changes_how_often_pieces_run_not_which_pieces_exist(passed_by_depth):
    shallow, deep = (_split(passed_by_depth(d)) for d in (4, 16))
    assert list(shallow[2]) == list(deep[2])  # same digests, same order
    assert [p.label for p in deep[0]][0] == "prologue" and deep[0][-1].label == "epilogue"
    counts = {d: [len(members) for members in s[2].values()] for d, s in ((4, shallow), (16, deep))}
    assert counts == {4: [1, 4, 1], 16: [1, 16, 1]}


def _random_step(passed, t: int, gen: torch.Generator) -> dict:
    """A prefill of `t` tokens of one sequence over random KV caches (no zeros)."""
    from lowering.export import EXAMPLE_BLOCK_SIZE, EXAMPLE_BLOCKS

    i32 = dict(dtype=torch.int32)
    step = {
        "input_ids": torch.randint(0, 320, (t,), generator=gen),
        "positions": torch.arange(t),
        "attn_slot_mapping": torch.arange(t),
        "attn_block_tables": torch.arange(EXAMPLE_BLOCKS, **i32).reshape(1, -1),
        "attn_seq_lens": torch.tensor([t], **i32),
        "attn_query_start_loc": torch.tensor([0, t], **i32),
    }
    for node in passed.gm.graph.find_nodes(op="placeholder"):
        if node.target.startswith("kv_caches_"):
            shape = (EXAMPLE_BLOCKS, EXAMPLE_BLOCK_SIZE, *node.meta["val"].shape[2:])
            step[node.target] = torch.randn(shape, generator=gen)
    return step


def test_pieces_in_order_equal_the_whole_graph(passed_by_depth):
    from lowering.piecewise import run_eager

    passed = passed_by_depth(4)
    gen = torch.Generator().manual_seed(7)
    step = _random_step(passed, 9, gen)
    whole_step = {k: v.clone() for k, v in step.items()}
    args = [passed.weights[n] if n in passed.weights else whole_step[n] for n in passed.inputs]
    (want,) = passed.gm(*args)  # before the split (and before layer 0 is aligned)
    pieces, results, _ = _split(passed)
    per_piece = run_eager(pieces, passed.weights, step)
    values = {}
    for piece, piece_args in zip(pieces, per_piece, strict=True):
        values.update(zip(piece.outputs, piece.gm(*piece_args), strict=True))
    assert want.abs().max() > 0
    torch.testing.assert_close(values[results[0]], want, rtol=0, atol=0)
    for name in step:  # the KV caches were written alike
        torch.testing.assert_close(step[name], whole_step[name], rtol=0, atol=0)


@pytest.mark.slow  # two Inductor compiles of the demo
def test_piecewise_and_monolithic_artifacts_generate_the_reference_tokens(tmp_path):
    from compile_cache import Store
    from kiln.llm import LLM
    from lowering.compile import CompileOptions, compile_model
    from runtime.sampling_params import SamplingParams
    from tests.lowering.test_compile_e2e import assert_same_greedy_tokens

    store = Store(tmp_path / "compile")
    paths = {}
    for lowering in ("piecewise", "monolithic"):
        options = CompileOptions(target="cpu", lowering=lowering)
        result = compile_model(options, store, progress=lambda m: None)
        assert result.artifact.manifest["lowering"] == f"aoti_{lowering}".replace("_monolithic", "")
        paths[lowering] = str(result.artifact.path)
    prompts = ["héllo ✓ a first prompt", "and a second, longer prompt to decode from"]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    ref = LLM("demo", compile="never").generate(prompts, params)
    for lowering, path in paths.items():
        llm = LLM("demo", artifact=path)
        run = type(llm.engine.loaded.runner.forward.run).__name__
        assert run == ("PiecewiseCall" if lowering == "piecewise" else "ProgramCall")
        got = llm.generate(prompts, params)
        for g, r in zip(got, ref, strict=True):
            assert g.prompt_token_ids == r.prompt_token_ids
            assert_same_greedy_tokens(r.prompt_token_ids, r.token_ids, g.token_ids)


@pytest.mark.gpu
def test_gpu_piecewise_and_monolithic_logits_match_the_reference(tmp_path):
    """Both lowerings on this GPU (fp32 demo, AOTInductor with Triton attention in the
    package): logits of a prefill + decode batch within 1e-3 of the eager reference."""
    from compile_cache import Store
    from kiln.llm import LLM
    from lowering.compile import CompileOptions, compile_model
    from runtime.model_runner import StepSeq

    batch = [StepSeq(list(range(3, 40)), 0, [0, 1, 2], True), StepSeq([5, 6, 7], 0, [3], True)]
    ref = LLM("demo", compile="never", dtype="float32").engine.loaded.runner.execute(batch)
    store = Store(tmp_path / "compile")
    for lowering in ("piecewise", "monolithic"):
        options = CompileOptions(target="auto", dtype="float32", lowering=lowering)
        art = compile_model(options, store, progress=lambda m: None).artifact
        llm = LLM("demo", artifact=str(art.path), dtype="float32")
        got = llm.engine.loaded.runner.execute(batch)
        rel = ((got - ref).abs().max() / ref.abs().max()).item()
        assert rel <= 1e-3, (lowering, rel)


def test_fp8_graph_aligns_layer_0_and_splits_exactly():
    """With --quantization fp8 layer 0 starts with rms_norm_quant: it is aligned to the other
    layers' fused_add_rms_norm_quant, and the pieces still compute the graph bit for bit."""
    from lowering.compile import pass_config
    from lowering.piecewise import run_eager
    from model_defs.loader import load_model
    from model_defs.registry import resolve_model_path
    from passes.compile import compile_graph

    model = load_model(resolve_model_path("demo"), torch.bfloat16)
    passed, _ = compile_graph(model, pass_config(None, "fp8"), max_num_tokens=64)
    assert "kiln.rms_norm_quant" in str(passed.gm.graph)
    gen = torch.Generator().manual_seed(3)
    step = {k: v.to(torch.bfloat16) if k.startswith("kv_") else v for k, v in
            _random_step(passed, 6, gen).items()}  # fmt: skip
    step["input_ids"] = step["input_ids"] % passed.vocab_size
    whole = {k: v.clone() for k, v in step.items()}
    (want,) = passed.gm(
        *[passed.weights[n] if n in passed.weights else whole[n] for n in passed.inputs]
    )
    pieces, results, groups = _split(passed)
    assert [len(m) for m in groups.values()] == [1, model.cfg.num_layers, 1]
    values = {}
    for piece, args in zip(pieces, run_eager(pieces, passed.weights, step), strict=True):
        values.update(zip(piece.outputs, piece.gm(*args), strict=True))
    assert want.abs().max() > 0
    torch.testing.assert_close(values[results[0]], want, rtol=0, atol=0)
