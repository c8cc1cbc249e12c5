"""Run a graph after every pass on the same inputs and measure its drift from the reference.

`kiln passes --check-numerics MODEL` prints this table; the pass tests use `step_inputs` to
build random, realistic steps (several sequences, paged KV cache, contiguous block tables).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_defs.decoder import DecoderForCausalLM
from model_defs.kv_cache import allocate_kv_caches
from model_defs.step_inputs import StepInputs, StepSeq, prepare_inputs
from passes.config import PassConfig
from passes.manager import CompileTrace

BLOCK_SIZE = 4


def step_inputs(
    model: DecoderForCausalLM, prompt_lens: list[int], seed: int = 0
) -> tuple[StepInputs, int]:
    """A prefill step of random prompts, one sequence each; returns (inputs, blocks needed)."""
    gen = torch.Generator().manual_seed(seed)
    batch, next_block = [], 0
    for n in prompt_lens:
        blocks = -(-n // BLOCK_SIZE)
        ids = torch.randint(0, model.cfg.vocab_size, (n,), generator=gen).tolist()
        batch.append(StepSeq(ids, 0, list(range(next_block, next_block + blocks)), True))
        next_block += blocks
    device = model.embed_tokens.device
    return prepare_inputs(batch, BLOCK_SIZE, device), next_block


def fresh_kv(model: DecoderForCausalLM, num_blocks: int):
    return allocate_kv_caches(
        model.cfg, max(num_blocks, 1), BLOCK_SIZE, model.embed_tokens.dtype,
        model.embed_tokens.device, model.par.tp_size,
    )  # fmt: skip


def run_forward(forward, model: DecoderForCausalLM, inputs: StepInputs, num_blocks: int):
    """hidden [T, H] from `forward` on `inputs`, with a fresh (zeroed) KV cache."""
    with torch.inference_mode():
        return forward(inputs.input_ids, inputs.positions, inputs.attn, fresh_kv(model, num_blocks))


@dataclass(frozen=True)
class NumericsRow:
    name: str
    enabled: bool
    rewrites: int
    max_abs_dev: float | None  # vs the eager model; None for passes that did not run
    min_cosine: float | None


def check_numerics(
    model: DecoderForCausalLM, cfg: PassConfig, prompt_lens: list[int], seed: int = 0
) -> tuple[list[NumericsRow], CompileTrace]:
    from passes.compile import PassedModel, compile_graph

    inputs, blocks = step_inputs(model, prompt_lens, seed)
    reference = run_forward(model, model, inputs, blocks).float()
    rows = []

    def after_pass(record, gm, ctx):
        dev = cos = None
        if record.enabled:
            passed = PassedModel(
                gm, ctx.weights, ctx.lm_head, model.cfg.vocab_size, ctx.token_buckets
            )
            out = run_forward(passed, model, inputs, blocks).float()
            dev = (out - reference).abs().max().item()
            cos = torch.nn.functional.cosine_similarity(out, reference, dim=-1).min().item()
        rows.append(NumericsRow(record.name, record.enabled, record.rewrites, dev, cos))

    _, trace = compile_graph(model, cfg, on_pass=after_pass)
    return rows, trace


def format_rows(rows: list[NumericsRow]) -> str:
    lines = [f"{'pass':<26} {'on':<3} {'rewrites':>8} {'max |dev|':>11} {'min cos':>9}"]
    for r in rows:
        dev = f"{r.max_abs_dev:.3e}" if r.max_abs_dev is not None else "-"
        cos = f"{r.min_cosine:.6f}" if r.min_cosine is not None else "-"
        on = "yes" if r.enabled else "no"
        lines.append(f"{r.name:<26} {on:<3} {r.rewrites:>8} {dev:>11} {cos:>9}")
    return "\n".join(lines)
