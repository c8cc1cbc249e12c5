"""The demo model with a random paged KV cache, and prefilled decode and mixed batches (shared
helpers)."""

from __future__ import annotations

import random

import torch

from model_defs.demo import ensure_demo_checkpoint
from model_defs.kv_cache import allocate_kv_caches
from model_defs.loader import load_model
from model_defs.registry import read_config
from model_defs.step_inputs import StepSeq
from runtime.model_runner import ModelRunner

BLOCK = 16
NUM_BLOCKS = 64


def demo(device: str, dtype=torch.float32):
    """(model, eager ModelRunner) over a KV cache of random, non-zero values, so a stray write
    or read of a padding row would show."""
    path = ensure_demo_checkpoint()
    _, cfg = read_config(path)
    model = load_model(path, dtype, device)
    kv = allocate_kv_caches(cfg, NUM_BLOCKS, BLOCK, dtype, device)
    with torch.inference_mode():
        for k, v in kv:
            k.normal_()
            v.normal_()
    return model, ModelRunner(model, model.compute_logits, kv, BLOCK, device)


def prefilled_decode_batch(runner: ModelRunner, n: int, seed: int) -> list[StepSeq]:
    """Prefill n random prompts (each in its own blocks), return their next decode step."""
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


def prefilled_mixed_batch(runner: ModelRunner, n: int, seed: int) -> list[StepSeq]:
    """A step that mixes n decodes (prefilled as in `prefilled_decode_batch`) with a new
    prompt's first chunk (no logits: its prompt goes on) and another new prompt whole (logits),
    in blocks of their own."""
    rng = random.Random(seed)
    decodes = prefilled_decode_batch(runner, n, seed)
    used = {b for s in decodes for b in s.block_table}
    free = [b for b in rng.sample(range(NUM_BLOCKS), NUM_BLOCKS) if b not in used]
    chunk = StepSeq([rng.randrange(3, 500) for _ in range(21)], 0, free[:3], False)
    whole = StepSeq([rng.randrange(3, 500) for _ in range(9)], 0, free[3:4], True)
    return [decodes[0], chunk, *decodes[1:], whole]


def clone_kv(kv):
    return [(k.clone(), v.clone()) for k, v in kv]


def restore_kv(kv, saved) -> None:
    for (k, v), (k0, v0) in zip(kv, saved, strict=True):
        k.copy_(k0)
        v.copy_(v0)


def max_kv_diff(kv, other) -> float:
    pairs = zip(kv, other, strict=True)
    return max(
        max((k - k1).abs().max().item(), (v - v1).abs().max().item()) for (k, v), (k1, v1) in pairs
    )
