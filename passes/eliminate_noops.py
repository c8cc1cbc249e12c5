"""EliminateNoops: drop reshapes, views, slices and copies that change nothing, then dead code."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from passes.base import Pass, PassContext
from passes.graph import aten, is_mutating, kiln, remove_dead
from passes.pipeline import register_pass

VIEWS = {
    aten.reshape.default,
    aten.view.default,
    aten._unsafe_view.default,
    aten.alias.default,
    aten.expand.default,
}
COPIES = {aten.clone.default, aten._to_copy.default, aten.to.dtype, aten.contiguous.default}


def _same_layout(a, b) -> bool:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    # str() compares symbolic sizes structurally (T == T) without adding shape guards.
    return (
        [str(d) for d in a.shape] == [str(d) for d in b.shape]
        and a.dtype == b.dtype
        and a.device == b.device
    )


def _feeds_mutation(node: fx.Node) -> bool:
    return any(is_mutating(u) for u in node.users)


def is_noop(node: fx.Node) -> bool:
    """True when `node` returns its first input unchanged (same values, shape, dtype)."""
    if node.op != "call_function" or not node.args or not isinstance(node.args[0], fx.Node):
        return False
    src, out = node.args[0], node
    same = _same_layout(src.meta.get("val"), out.meta.get("val"))
    if node.target in VIEWS:
        return same
    if node.target is aten.slice.Tensor:
        start = node.args[2] if len(node.args) > 2 else 0
        step = node.args[4] if len(node.args) > 4 else 1
        return same and start in (0, None) and step == 1
    if node.target in COPIES:
        # A copy protects against a later in-place write; keep it if either side is mutated.
        return same and not _feeds_mutation(src) and not _feeds_mutation(out)
    if node.target is kiln.all_reduce.default:
        return node.args[1] == 1  # one rank: the identity
    return False


@register_pass
@dataclass(frozen=True)
class EliminateNoops(Pass):
    name = "eliminate_noops"
    phase = "cleanup"
    description = "drop reshapes/views/slices/copies that change nothing, then dead code"

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> int:
        removed = 0
        for node in list(gm.graph.nodes):
            if is_noop(node):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
                removed += 1
        return removed + remove_dead(gm)
