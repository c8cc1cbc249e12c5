"""Every family against `transformers` (fp32, CPU): prefill and decode logits, greedy tokens."""

from __future__ import annotations

import pytest
import torch
from hf_models import make_checkpoint

from model_defs.kv_cache import allocate_kv_caches
from model_defs.loader import load_model
from model_defs.step_inputs import StepSeq
from runtime.model_runner import ModelRunner

FAMILIES = ["llama", "llama3", "qwen2", "qwen3", "mistral"]
# Other shapes: multi-head (no GQA), GQA 8:1 with odd sizes, tied qwen2, a wide head.
VARIANTS = {
    "llama-mha": ("llama", dict(num_key_value_heads=4, vocab_size=317)),
    "llama-gqa8": (
        "llama",
        dict(
            num_attention_heads=8,
            num_key_value_heads=1,
            hidden_size=72,
            intermediate_size=100,
            head_dim=16,
        ),
    ),
    "qwen2-tied": ("qwen2", dict(tie_word_embeddings=True, vocab_size=301)),
    "qwen3-wide-head": ("qwen3", dict(head_dim=64, num_key_value_heads=1)),
}
BLOCK = 4
PROMPTS = [[1, 5, 7, 9, 11, 13, 200, 3, 4, 5, 6, 17, 19], [3, 4], [8, 9, 10, 11, 12, 250, 31]]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def run_greedy(runner: ModelRunner, prompts, steps: int, stagger: int = 0):
    """Greedy decoding of all prompts in one batch; the last prompt joins `stagger` steps late,
    so some steps mix a prefill with decodes. Returns per-prompt generated tokens and the
    logits that produced each of them."""
    blocks_per_seq = (max(map(len, prompts)) + steps + stagger) // BLOCK + 1
    tables = [
        list(range(i * blocks_per_seq, (i + 1) * blocks_per_seq)) for i in range(len(prompts))
    ]
    tokens = [list(p) for p in prompts]
    computed = [0] * len(prompts)
    logits_seen = [[] for _ in prompts]
    while min(len(t) - len(p) for t, p in zip(tokens, prompts)) < steps:
        active = [
            i
            for i in range(len(prompts))
            if len(tokens[i]) - len(prompts[i]) < steps
            and (i < len(prompts) - 1 or len(logits_seen[0]) >= stagger)
        ]
        batch = [StepSeq(tokens[i][computed[i] :], computed[i], tables[i], True) for i in active]
        logits = runner.execute(batch)
        for row, i in enumerate(active):
            computed[i] = len(tokens[i])
            logits_seen[i].append(logits[row])
            tokens[i].append(int(logits[row].argmax()))
    return [t[len(p) :] for t, p in zip(tokens, prompts)], logits_seen


@pytest.fixture(scope="module", params=FAMILIES + list(VARIANTS))
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    family, overrides = VARIANTS.get(request.param, (request.param, {}))
    hf = make_checkpoint(path, family, **overrides)
    return path, hf


def make_runner(path) -> ModelRunner:
    model = load_model(path)
    kv = allocate_kv_caches(model.cfg, 64, BLOCK, torch.float32, "cpu")
    return ModelRunner(model, model.compute_logits, kv, BLOCK, "cpu")


def test_prefill_and_decode_logits_match_transformers(checkpoint):
    path, hf = checkpoint
    generated, logits = run_greedy(make_runner(path), PROMPTS, steps=17, stagger=2)
    for prompt, gen, seen in zip(PROMPTS, generated, logits):
        full = torch.tensor([prompt + gen[:-1]])
        with torch.no_grad():
            ref = hf(full).logits[0, len(prompt) - 1 :]  # prefill's last + 16 decode steps
        assert len(seen) == ref.shape[0] == 17
        for step, ours in enumerate(seen):
            assert rel_err(ours, ref[step]) <= 1e-4, f"step {step}"


def test_greedy_generation_equals_transformers_generate(checkpoint):
    path, hf = checkpoint
    generated, _ = run_greedy(make_runner(path), PROMPTS, steps=32)
    for prompt, gen in zip(PROMPTS, generated):
        with torch.no_grad():
            out = hf.generate(
                torch.tensor([prompt]),
                max_new_tokens=32,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        assert out[0, len(prompt) :].tolist() == gen
