"""Small helpers every pass shares: op names, op counts, fake-value refresh, safe node removal.

Graph nodes carry `meta["val"]` (a fake tensor with the symbolic token count `T`), which passes
read for dtypes and shapes. A pass that changes weight shapes or inserts nodes calls
`refresh_meta`, which re-runs fake propagation over the whole graph.
"""

from __future__ import annotations

import operator
from collections import Counter

import torch
from torch import fx

import ir.ops  # noqa: F401  (registers torch.ops.kiln.*, which patterns name)

kiln = torch.ops.kiln
aten = torch.ops.aten


def op_name(node: fx.Node) -> str:
    """A short, stable name for a node's operation: `kiln.rms_norm`, `aten.linear`, `getitem`."""
    if node.op != "call_function":
        return node.op
    target = node.target
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        namespace = target.namespace
        return f"{namespace}.{target._schema.name.split('::')[-1]}"
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"hop.{target.name()}"
    return getattr(target, "__name__", str(target))


def op_counts(gm: fx.GraphModule) -> Counter:
    """How many call_function nodes of each op the graph holds (getitems and sym_size excluded)."""
    skip = {"getitem", "aten.sym_size"}
    return Counter(
        op_name(n) for n in gm.graph.nodes if n.op == "call_function" and op_name(n) not in skip
    )


def count(gm: fx.GraphModule, name: str) -> int:
    return op_counts(gm)[name]


def num_nodes(gm: fx.GraphModule) -> int:
    return len(gm.graph.nodes)


def is_mutating(node: fx.Node) -> bool:
    """True for ops that write one of their inputs (kiln.attention writes the KV cache)."""
    target = node.target
    return isinstance(target, torch._ops.OpOverload) and target._schema.is_mutable


def fake_mode_of(gm: fx.GraphModule):
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and hasattr(val, "fake_mode"):
            return val.fake_mode
    raise AssertionError("captured graph has no fake values in node.meta['val']")


def refresh_meta(gm: fx.GraphModule, weights: dict[str, torch.Tensor]) -> None:
    """Re-run fake propagation so every node's meta['val'] matches the current graph and weights.

    User inputs keep their symbolic fake values (T stays symbolic); weight placeholders get fresh
    static fake values from `weights`, since passes may have padded or quantized them.
    """
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    mode = fake_mode_of(gm)
    inputs = []
    for node in gm.graph.find_nodes(op="placeholder"):
        if node.target in weights:
            node.meta["val"] = mode.from_tensor(weights[node.target], static_shapes=True)
        inputs.append(node.meta["val"])
    gm.recompile()
    with mode:
        FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*inputs)


def infer_meta(node: fx.Node) -> None:
    """Set a new node's meta['val'] by running its op on its inputs' fake values."""
    mode = fake_mode_of(node.graph.owning_module)

    def val(a):
        return a.meta["val"] if isinstance(a, fx.Node) else a

    args = torch.utils._pytree.tree_map(val, node.args)
    kwargs = torch.utils._pytree.tree_map(val, node.kwargs)
    with mode:
        node.meta["val"] = node.target(*args, **kwargs)


def add_placeholder(gm: fx.GraphModule, name: str) -> fx.Node:
    """A new weight placeholder, placed after the existing weight placeholders' first one."""
    first = next(iter(gm.graph.find_nodes(op="placeholder")))
    with gm.graph.inserting_before(first):
        return gm.graph.placeholder(name)


def remove_dead(gm: fx.GraphModule, weights: dict[str, torch.Tensor] | None = None) -> int:
    """Drop unused pure nodes, and weight placeholders nothing reads; returns how many went."""
    graph = gm.graph
    removed = 0
    for node in reversed(list(graph.nodes)):
        if node.op == "call_function" and not node.users and not node.is_impure():
            graph.erase_node(node)
            removed += 1
        elif node.op == "placeholder" and weights is not None and node.target in weights:
            if not node.users:
                graph.erase_node(node)
                del weights[node.target]
    return removed


def getitem(graph: fx.Graph, node: fx.Node, index: int) -> fx.Node:
    return graph.call_function(operator.getitem, (node, index))
