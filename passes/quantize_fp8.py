"""QuantizeFP8: every linear -> quant_fp8 (dynamic activation scales) + scaled_mm.

Weights are quantized online, once, when the pass runs (that is, at load): fp8 e4m3 with one
scale per output channel (`quantize_weight_per_channel`). Activations get dynamic scales, one
per token (fp8_group_size=0) or one per group of features; a layer whose input width is not a
multiple of the group size falls back to per-token scales. Each activation is quantized once
even when several linears read it. The quant nodes this pass leaves are what FuseNormQuant,
FuseActQuant and FuseAttnQuant fold into their producers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from ir.ops.quant import quantize_weight_per_channel
from passes.base import Pass, PassContext
from passes.config import PassConfig
from passes.graph import add_placeholder, aten, fake_mode_of, getitem, infer_meta, kiln
from passes.pipeline import register_pass


def _quantize_activation(graph: fx.Graph, x: fx.Node, group: int) -> tuple[fx.Node, fx.Node]:
    q = graph.call_function(kiln.quant_fp8.default, (x, group))
    infer_meta(q)
    xq, scale = getitem(graph, q, 0), getitem(graph, q, 1)
    infer_meta(xq)
    infer_meta(scale)
    return xq, scale


@register_pass
@dataclass(frozen=True)
class QuantizeFP8(Pass):
    name = "quantize_fp8"
    phase = "quantize"
    description = "linears -> quant_fp8 + scaled_mm, fp8 weights with per-channel scales"
    optional = False  # it *is* --quantization fp8; `--passes none` must not drop it

    def applies(self, cfg: PassConfig) -> bool:
        return cfg.quantization == "fp8"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> int:
        quantized: dict[tuple[fx.Node, int], tuple[fx.Node, fx.Node]] = {}
        rewrites = 0
        for node in list(gm.graph.nodes):
            if not self._is_weight_linear(node, ctx):
                continue
            x, weight = node.args[0], node.args[1]
            bias = node.args[2] if len(node.args) > 2 else None
            wq, w_scale = self._quantize_weight(gm, weight, ctx)
            group = self._group_size(x, ctx)
            with gm.graph.inserting_before(node):
                if (x, group) not in quantized:
                    quantized[x, group] = _quantize_activation(gm.graph, x, group)
                xq, x_scale = quantized[x, group]
                out_dtype = x.meta["val"].dtype
                mm = gm.graph.call_function(
                    kiln.scaled_mm.default, (xq, x_scale, wq, w_scale, bias, out_dtype)
                )
                infer_meta(mm)
            node.replace_all_uses_with(mm)
            gm.graph.erase_node(node)
            if not weight.users:
                gm.graph.erase_node(weight)
                del ctx.weights[weight.target]
            rewrites += 1
        return rewrites

    @staticmethod
    def _is_weight_linear(node: fx.Node, ctx: PassContext) -> bool:
        if node.op != "call_function" or node.target is not aten.linear.default:
            return False
        weight = node.args[1]
        return weight.op == "placeholder" and weight.target in ctx.weights

    @staticmethod
    def _quantize_weight(gm: fx.GraphModule, weight: fx.Node, ctx: PassContext):
        wq, scale = quantize_weight_per_channel(ctx.weights[weight.target])  # [N, K], [N]
        names = (f"{weight.target}_fp8", f"{weight.target}_scale")
        for name, tensor in zip(names, (wq, scale), strict=True):
            ctx.weights[name] = tensor
        placeholders = add_placeholder(gm, names[0]), add_placeholder(gm, names[1])
        mode = fake_mode_of(gm)
        for node, tensor in zip(placeholders, (wq, scale), strict=True):
            node.meta["val"] = mode.from_tensor(tensor, static_shapes=True)
        return placeholders

    @staticmethod
    def _group_size(x: fx.Node, ctx: PassContext) -> int:
        group = ctx.cfg.fp8_group_size
        width = x.meta["val"].shape[-1]
        return group if group and width % group == 0 else 0
