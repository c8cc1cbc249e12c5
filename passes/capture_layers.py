"""Capture a deep decoder by tracing four of its layers and copying the graph of one.

Tracing costs the same for every decoder layer (~0.1 s each on the CPU machine: 3 s of an
8B model's 32), yet a model's layers are one computation over different weights and KV
caches. So `probe(model)` is the model with layers 0, 1, 2 and N-1 and a pass-through in
every other slot: its export has every placeholder of the full model's, named and ordered as
the full export names them, except the weights of the skipped layers. `extend(gm, ...)` then
copies layer 2's nodes once per skipped layer (with that layer's weight and KV placeholders)
and joins layer N-1 to the last copy.

A layer's *section* runs from the first node reading one of its placeholders to the node
before the next layer's first such node (so it ends with the residual add the next layer
starts with). Copying is only done when layer 1's section is layer 2's node for node (same
ops and literals, each input in the same place relative to its own layer), when no section
reads another layer's nodes except the previous one's, and when every layer's module is
alike (per-layer sliding windows are not); otherwise the caller exports the whole model.
The result prints the same canonical text as the full export (tests/passes/test_capture_layers.py):
the same graph hash, the same passes. Copied nodes share their template's metadata (fake
values, module stack).
"""

from __future__ import annotations

import copy
import re

from torch import fx, nn

from model_defs.decoder import DecoderForCausalLM

TRACED = 4  # layers 0 (different: no residual add before it), 1, 2 (the template), N-1
_LAYER = re.compile(r"^(p_layers_|b_layers_|kv_caches_)(\d+)_(.*)$")


class _PassThrough(nn.Module):
    """A decoder layer the probe does not trace: the residual stream goes through unchanged."""

    def forward(self, positions, h, residual, attn, kv_cache, cos_sin):
        return h, residual


def probe(model: DecoderForCausalLM) -> DecoderForCausalLM | None:
    """The model with only layers 0, 1, 2 and N-1 computing (sharing its parameters), or
    None when tracing it would not save anything or its layers are not all alike."""
    layers = list(model.layers)
    if len(layers) <= TRACED or not _alike(layers):
        return None
    stand_ins = [_PassThrough() for _ in layers[3:-1]]
    view = copy.copy(model)
    view._modules = dict(model._modules)  # the copy's own table: the model keeps its layers
    view.layers = nn.ModuleList([*layers[:3], *stand_ins, layers[-1]])
    return view


def _alike(layers: list[nn.Module]) -> bool:
    first = _signature(layers[0])
    return all(_signature(layer) == first for layer in layers[1:])


def _signature(layer: nn.Module) -> list:
    """What makes two layers trace alike: module types, plain attributes, parameter shapes."""
    sig = []
    for name, module in layer.named_modules():
        attrs = sorted(
            (k, v)
            for k, v in vars(module).items()
            if not k.startswith("_") and isinstance(v, (int, float, bool, str, tuple, type(None)))
        )
        params = [(n, tuple(p.shape), p.dtype, p.device.type)
                  for n, p in module.named_parameters(recurse=False)]  # fmt: skip
        sig.append((name, type(module).__name__, attrs, params))
    return sig


def _layer_of(node: fx.Node) -> int | None:
    m = _LAYER.match(node.target) if node.op == "placeholder" else None
    return int(m.group(2)) if m else None


def _renamed(name: str, layer: int) -> str:
    prefix, _, role = _LAYER.match(name).groups()
    return f"{prefix}{layer}_{role}"


def extend(gm: fx.GraphModule, weights: dict, model: DecoderForCausalLM) -> bool:
    """Turn the probe's export into the full model's graph in place (adding the skipped layers'
    weights to `weights`); False, with `gm` untouched, if its sections do not line up."""
    n = model.cfg.num_layers
    if any(p.target.startswith("b_layers_") for p in gm.graph.find_nodes(op="placeholder")):
        return False  # per-layer buffers: not lifted as weights here
    sections = _sections(gm, (0, 1, 2, n - 1))
    if sections is None or not _same_computation(sections, n):
        return False
    (output,) = gm.graph.find_nodes(op="output")
    if any(a in set(sections[0] + sections[1] + sections[2]) for a in output.all_input_nodes):
        return False
    holders = _weight_placeholders(gm, weights, model, n)
    last = _copy_layers(gm.graph, sections, holders, n)
    tail = {node: i for i, node in enumerate(sections[2])}
    for node in sections[3]:  # layer N-1 reads the last copy instead of layer 2
        node.args = fx.map_arg(node.args, lambda a: last[tail[a]] if a in tail else a)
        node.kwargs = fx.map_arg(node.kwargs, lambda a: last[tail[a]] if a in tail else a)
    gm.graph.lint()
    gm.recompile()
    return True


def _sections(gm: fx.GraphModule, layers: tuple[int, ...]) -> list[list[fx.Node]] | None:
    """[section of each of `layers`..., prologue]: the compute nodes from the first that reads
    one of the layer's placeholders to the next layer's first, in graph order; the prologue
    is every compute node before layer 0's section (embedding, symbolic sizes)."""
    calls = [node for node in gm.graph.nodes if node.op == "call_function"]
    starts = []
    for layer in layers:
        first = next((i for i, node in enumerate(calls) if any(
            _layer_of(a) == layer for a in node.all_input_nodes)), None)  # fmt: skip
        if first is None or (starts and first <= starts[-1]):
            return None
        starts.append(first)
    bounds = [*starts, len(calls)]
    return [calls[a:b] for a, b in zip(bounds, bounds[1:])] + [calls[: starts[0]]]


def _same_computation(sections: list[list[fx.Node]], n: int) -> bool:
    """Layer 1's section is layer 2's, node for node, and each section reads only its own
    nodes, its own placeholders, the previous section and what every layer shares."""
    s0, s1, s2, s_last, prologue = sections
    if len(s1) != len(s2):
        return False
    shared = set(prologue)
    for own, prev, layer in ((s1, s0, 1), (s2, s1, 2), (s_last, s2, n - 1)):
        inside, before = set(own), set(prev)
        for node in own:
            for a in node.all_input_nodes:
                ok = a in inside or a in before or a in shared
                ok = ok or (a.op == "placeholder" and _layer_of(a) in (None, layer))
                if not ok:
                    return False
    pos1, pos2 = {x: i for i, x in enumerate(s1)}, {x: i for i, x in enumerate(s2)}
    pos0 = {x: i for i, x in enumerate(s0)}

    def same(a1, a2) -> bool:
        if isinstance(a1, fx.Node) and isinstance(a2, fx.Node):
            if a2 in pos2:
                return pos1.get(a1) == pos2[a2]
            if a2 in pos1:  # the previous layer's node, the same distance from its end
                return a1 in pos0 and len(s0) - pos0[a1] == len(s1) - pos1[a2]
            if _layer_of(a2) == 2:
                return _layer_of(a1) == 1 and _renamed(a1.target, 2) == a2.target
            return a1 is a2
        if isinstance(a1, (list, tuple)) and isinstance(a2, (list, tuple)):
            return type(a1) is type(a2) and len(a1) == len(a2) and all(map(same, a1, a2))
        if isinstance(a1, fx.Node) or isinstance(a2, fx.Node):
            return False
        return type(a1) is type(a2) and a1 == a2

    return all(
        x.op == y.op and x.target == y.target and same(x.args, y.args)
        and x.kwargs.keys() == y.kwargs.keys() and same(list(x.kwargs.values()), list(y.kwargs.values()))
        for x, y in zip(s1, s2)
    )  # fmt: skip


def _weight_placeholders(gm: fx.GraphModule, weights: dict, model, n: int) -> dict:
    """{(layer, name in layer 2's terms): placeholder} for layers 3..N-2: the weights made
    placeholders (before layer N-1's, in layer 2's order) and the KV caches the export kept."""
    graph = gm.graph
    phs = list(graph.find_nodes(op="placeholder"))
    template = [p for p in phs if _layer_of(p) == 2]
    first_last = next(p for p in phs if _layer_of(p) == n - 1 and p.target.startswith("p_"))
    params = dict(model.named_parameters())
    mode = next(p.meta["val"].fake_mode for p in template if "val" in p.meta)
    by_name = {p.target: p for p in phs}
    holders = {}
    for layer in range(3, n - 1):
        for name in (p.target for p in template):  # layer 2's placeholders, in graph order
            target = _renamed(name, layer)
            if name.startswith("kv_caches_"):
                holders[(layer, name)] = by_name[target]
                continue
            tensor = params[_param_fqn(target, layer, model)]
            with graph.inserting_before(first_last):
                node = graph.placeholder(target)
            node.meta["val"] = mode.from_tensor(tensor, static_shapes=True)
            weights[target] = tensor
            holders[(layer, name)] = node
    return holders


def _param_fqn(target: str, layer: int, model) -> str:
    """The parameter a `p_layers_<i>_...` placeholder lifts (underscores are ambiguous)."""
    prefix = f"layers.{layer}."
    for name, _ in model.layers[layer].named_parameters():
        if f"p_layers_{layer}_{name.replace('.', '_')}" == target:
            return prefix + name
    raise AssertionError(f"no parameter of layer {layer} is lifted as {target}")


def _copy_layers(graph: fx.Graph, sections, holders: dict, n: int) -> list[fx.Node]:
    """Copy layer 2's section for layers 3..N-2 before layer N-1's; returns the last copy."""
    _, s1, s2, s_last, _ = sections
    pos1, pos2 = {x: i for i, x in enumerate(s1)}, {x: i for i, x in enumerate(s2)}
    prev = s2
    for layer in range(3, n - 1):
        new: list[fx.Node] = []

        def remap(a: fx.Node, prev=prev, new=new, layer=layer):
            if a in pos2:
                return new[pos2[a]]
            if a in pos1:  # the previous layer's node (sections have one length)
                return prev[pos1[a]]
            if _layer_of(a) == 2:
                return holders[(layer, a.target)]
            return a

        with graph.inserting_before(s_last[0]):
            for node in s2:
                new.append(graph.node_copy(node, remap))
        prev = new
    return prev
