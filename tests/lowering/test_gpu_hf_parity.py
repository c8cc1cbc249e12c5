"""Compiled GPU artifacts against `transformers`: tiny fp32 checkpoints of every family,
every pass of the pipeline on, greedy tokens equal to `generate`'s on the same GPU."""

from __future__ import annotations

import pytest
import torch

from tests.hf_models import add_demo_tokenizer, make_checkpoint

pytestmark = pytest.mark.gpu

FAMILIES = ["llama", "llama3", "qwen2", "qwen3", "mistral"]
# The default pipeline plus the passes that are off by default and apply without fp8 or TP.
ALL_PASSES = "+fuse_rope_attention"
PROMPTS = [[1, 5, 7, 9, 11, 13, 200, 3, 4, 5, 6, 17, 19], [3, 4], [8, 9, 10, 11, 12, 250, 31]]
STEPS = 24


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from compile_cache import Store

    return Store(tmp_path_factory.mktemp("compile"))


def hf_greedy(hf, prompt: list[int]) -> list[int]:
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([prompt], device="cuda"),
            max_new_tokens=STEPS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_artifact_greedy_equals_transformers(family, store, tmp_path):
    from kiln.llm import LLM
    from lowering.compile import CompileOptions, compile_model
    from runtime.sampling_params import SamplingParams

    hf = make_checkpoint(tmp_path, family).cuda()
    add_demo_tokenizer(tmp_path)
    options = CompileOptions(model=str(tmp_path), target="auto", dtype="float32", passes=ALL_PASSES)
    art = compile_model(options, store, progress=lambda m: None).artifact
    enabled = {p["name"] for p in art.manifest["passes"]}
    assert "fuse_rope_attention" in enabled and "fuse_add_rms_norm" in enabled
    llm = LLM(str(tmp_path), artifact=str(art.path), dtype="float32")
    params = SamplingParams(max_tokens=STEPS, temperature=0, ignore_eos=True)
    got = llm.generate(PROMPTS, params)
    for prompt, completion in zip(PROMPTS, got, strict=True):
        assert completion.token_ids == hf_greedy(hf, prompt), family
