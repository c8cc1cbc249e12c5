"""`compile_graph`: capture a model, run the pass pipeline, return something the runner calls.

    forward, trace = compile_graph(model, PassConfig(quantization="fp8"))
    hidden = forward(input_ids, positions, attn, kv_caches)   # ModelRunner's signature
    logits = forward.compute_logits(hidden)                    # handles a padded vocab

The result runs the post-pass graph eagerly (each IR op through its reference); lowering takes
`forward.gm` and `forward.weights` instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx

from model_defs.attn_metadata import AttnMetadata, pad_to_bucket
from model_defs.attn_metadata import graph_inputs as step_inputs
from model_defs.decoder import DecoderForCausalLM
from passes.base import Pass, PassContext
from passes.capture import CapturedGraph, capture, graph_hash, graph_inputs
from passes.config import PassConfig
from passes.manager import CompileTrace, PassManager
from passes.pipeline import default_pipeline


@dataclass
class PassedModel:
    """The post-pass graph with its weights, callable like `DecoderForCausalLM.forward`."""

    gm: fx.GraphModule
    weights: dict[str, torch.Tensor]  # placeholder name -> tensor
    lm_head: torch.Tensor  # [V', H], V' >= vocab_size (zero rows past it)
    vocab_size: int
    token_buckets: tuple[int, ...] = ()

    def __call__(self, input_ids, positions, attn: AttnMetadata, kv_caches) -> torch.Tensor:
        num_tokens = input_ids.shape[0]
        input_ids, positions, attn = pad_to_bucket(input_ids, positions, attn, self.token_buckets)
        user = step_inputs(input_ids, positions, attn, kv_caches)
        missing = [n for n in self.inputs if n not in self.weights and n not in user]
        if missing:
            raise ValueError(f"graph inputs {missing} were not given (kv_caches too short?)")
        args = [self.weights[n] if n in self.weights else user[n] for n in self.inputs]
        (hidden,) = self.gm(*args)
        return hidden[:num_tokens]

    forward = __call__

    def __post_init__(self) -> None:
        self.inputs = graph_inputs(self.gm)  # placeholder names, in calling order

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, H] -> logits [N, V] in fp32 (the padded vocabulary sliced off)."""
        return F.linear(hidden, self.lm_head)[:, : self.vocab_size].float()


def context_for(captured: CapturedGraph, model: DecoderForCausalLM, cfg: PassConfig) -> PassContext:
    return PassContext(cfg, model.cfg, dict(captured.weights), captured.lm_head)


def compile_graph(
    model: DecoderForCausalLM,
    cfg: PassConfig | None = None,
    pipeline: list[Pass] | None = None,
    on_pass: Callable | None = None,
    max_num_tokens: int = 8192,
) -> tuple[PassedModel, CompileTrace]:
    """Capture `model`, run the pipeline (default: `default_pipeline()`), return the result.

    `cfg.tp_size` is taken from the model. `on_pass(record, gm, ctx)` runs after each pass.
    """
    cfg = PassConfig(**{**_fields(cfg or PassConfig()), "tp_size": model.par.tp_size})
    start = time.perf_counter()
    captured = capture(model, max_num_tokens)
    trace = CompileTrace(graph_hash=graph_hash(captured.gm), capture_s=time.perf_counter() - start)
    ctx = context_for(captured, model, cfg)
    PassManager(default_pipeline() if pipeline is None else pipeline).run(
        captured.gm, ctx, trace, on_pass
    )
    captured.gm.recompile()
    passed = PassedModel(
        captured.gm, ctx.weights, ctx.lm_head, model.cfg.vocab_size, ctx.token_buckets
    )
    return passed, trace


def _fields(cfg: PassConfig) -> dict:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
