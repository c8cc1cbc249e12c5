"""PadForKernels: pad sizes that hurt kernels with zero weights; round T up to token buckets.

What it pads, exactly (numerics unchanged, since every added weight is zero):
- MLP intermediate size (per TP shard) to a multiple of `pad_multiple`: gate and up halves of
  gate_up_proj get zero rows, down_proj zero columns; silu(0) * 0 = 0, so the extra features
  add nothing. The pad/slice is folded into the weights: the graph gains no pad or slice op.
- Vocabulary of the LM head to a multiple of `pad_multiple` (zero rows); `compute_logits`
  slices the logits back to the real vocabulary.
- The token count: the compiled forward pads T up to the next of `token_buckets` (padding
  tokens write no KV: slot -1; no sequence owns their rows) and returns the first T rows.
Limits: hidden size is not padded (RMSNorm's mean would need the true width), nor head size
(it changes the KV cache layout and attention's scale); quantized MLPs (scaled_mm) are left
as they are, because quantization runs before this pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from passes.base import Pass, PassContext
from passes.graph import aten, kiln
from passes.pipeline import register_pass


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@register_pass
@dataclass(frozen=True)
class PadForKernels(Pass):
    name = "pad_for_kernels"
    phase = "padding"
    description = "zero-pad intermediate and vocab sizes to a multiple of 64; bucket T"
    reshapes_weights = True

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> int:
        multiple = ctx.cfg.pad_multiple
        rewrites = sum(self._pad_mlp(node, ctx, multiple) for node in gm.graph.nodes)
        vocab = ctx.lm_head.shape[0]
        if vocab % multiple:
            pad = round_up(vocab, multiple) - vocab
            ctx.lm_head = torch.cat((ctx.lm_head, ctx.lm_head.new_zeros(pad, ctx.lm_head.shape[1])))
            rewrites += 1
        ctx.token_buckets = ctx.cfg.token_buckets
        return rewrites

    @staticmethod
    def _pad_mlp(node: fx.Node, ctx: PassContext, multiple: int) -> bool:
        """linear(x, W_gu) -> silu_and_mul -> linear(., W_down), all weights unshared."""
        if node.op != "call_function" or node.target is not kiln.silu_and_mul.default:
            return False
        gate_up, users = node.args[0], list(node.users)
        if len(users) != 1 or not _is_linear_of_weight(gate_up, ctx) or len(gate_up.users) != 1:
            return False
        down = users[0]
        if not _is_linear_of_weight(down, ctx) or len(gate_up.args) > 2 or len(down.args) > 2:
            return False
        w_gu, w_down = ctx.weights[gate_up.args[1].target], ctx.weights[down.args[1].target]
        inter = w_gu.shape[0] // 2
        padded = round_up(inter, multiple)
        if padded == inter:
            return False
        new_gu = w_gu.new_zeros(2 * padded, w_gu.shape[1])  # [2 I', H] = [gate | up]
        new_gu[:inter] = w_gu[:inter]
        new_gu[padded : padded + inter] = w_gu[inter:]
        new_down = w_down.new_zeros(w_down.shape[0], padded)  # [H, I']
        new_down[:, :inter] = w_down
        ctx.weights[gate_up.args[1].target] = new_gu
        ctx.weights[down.args[1].target] = new_down
        return True


def _is_linear_of_weight(node: fx.Node, ctx: PassContext) -> bool:
    if not isinstance(node, fx.Node) or node.target is not aten.linear.default:
        return False
    weight = node.args[1]
    if weight.op != "placeholder" or weight.target not in ctx.weights:
        return False
    return len(weight.users) == 1
