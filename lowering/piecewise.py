"""Piecewise lowering: split the post-pass graph at decoder layers, compile each distinct piece
once, and let every layer call the same compiled piece with its own weights and KV cache.

The split follows the graph's order: a piece starts at the first node that reads a layer's
own tensors (a `p_layers_<i>_*` weight or `kv_caches_<i>_*`), so layer i runs from its first
add+norm to its down projection; nodes before layer 0 form the prologue (embedding), nodes after
the last read of the last layer the epilogue (final norm). Values crossing a boundary (the
residual stream's hidden and residual) become the piece's outputs and the next pieces' inputs;
sizes (SymInts) are recomputed inside every piece that needs them, so only tensors cross.

Inside a piece, placeholders are named by role and position (`w0`, `kv1`, `x0`; step inputs
keep their names), so two layers of one structure print the same canonical text
(`passes.capture.canonical_text`: ops, literal arguments, shapes, dtypes) and share a hash.
A model of N identical layers has four distinct pieces at any depth: prologue, layer 0 (no
residual yet), layer, epilogue.
"""

from __future__ import annotations

import hashlib
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx

from compile_cache.formats import AOTI_PIECEWISE
from kiln.errors import KilnError

kiln = torch.ops.kiln
_LAYER_WEIGHT = re.compile(r"(?:^|_)layers_(\d+)_")
_LAYER_KV = re.compile(r"^kv_caches_(\d+)_\d+$")


@dataclass
class Piece:
    """One run of the graph: its own GraphModule and where each of its inputs comes from.

    `bindings[k]` is ("weight", graph weight name), ("input", step input name, KV caches
    included) or ("value", producing node's name) for the piece's k-th placeholder;
    `outputs` are the names of the nodes it returns, in order."""

    label: str
    gm: fx.GraphModule
    bindings: list[tuple[str, str]]
    outputs: list[str] = field(default_factory=list)
    digest: str = ""


def align_first_layer(gm: fx.GraphModule) -> bool:
    """Give layer 0 the other layers' structure: its first norm `rms_norm(h)` becomes
    `fused_add_rms_norm(h, zeros)` (h + 0 is h exactly), so layer 0 shares the layer piece.
    Returns False (graph unchanged) when the layers do not start as expected."""
    first = {i: _first_read(gm, i) for i in (0, 1)}
    pairs = {kiln.rms_norm.default: kiln.fused_add_rms_norm.default}
    pairs[kiln.rms_norm_quant.default] = kiln.fused_add_rms_norm_quant.default
    norm, next_norm = first[0], first[1]
    if norm is None or next_norm is None or pairs.get(norm.target) is not next_norm.target:
        return False
    x, weight, *rest = norm.args
    graph = gm.graph
    with graph.inserting_before(norm):
        zeros = graph.call_function(torch.ops.aten.zeros_like.default, (x,))
        fused = graph.call_function(pairs[norm.target], (x, zeros, weight, *rest))
        residual = graph.call_function(operator.getitem, (fused, len(rest)))  # last output
    val = norm.meta["val"]
    zeros.meta["val"] = residual.meta["val"] = x.meta["val"]
    if isinstance(val, tuple):  # the quantized norm: (xq, scale), then the residual
        fused.meta["val"] = (*val, x.meta["val"])
        norm.replace_all_uses_with(fused)
    else:
        fused.meta["val"] = (val, x.meta["val"])
        with graph.inserting_after(residual):
            out = graph.call_function(operator.getitem, (fused, 0))
        out.meta["val"] = val
        norm.replace_all_uses_with(out)
    x.replace_all_uses_with(residual, delete_user_cb=lambda user: user not in (zeros, fused))
    graph.erase_node(norm)
    for item in sorted(fused.users, key=lambda n: n.args[1], reverse=True):
        fused.append(item)  # outputs read in index order, as the pass writes them elsewhere
    gm.recompile()
    return True


def _first_read(gm: fx.GraphModule, layer: int) -> fx.Node | None:
    """The first compute node that reads one of `layer`'s own placeholders."""
    for node in gm.graph.nodes:
        if node.op == "call_function" and any(
            a.op == "placeholder" and layer_of(a.target) == layer
            for a in _flat_nodes((node.args, node.kwargs))
        ):
            return node
    return None


def layer_of(name: str) -> int | None:
    """The decoder layer a placeholder belongs to, or None for shared tensors and step inputs."""
    m = _LAYER_KV.match(name) or _LAYER_WEIGHT.search(name)
    return int(m.group(1)) if m else None


def split(gm: fx.GraphModule, weights: dict[str, torch.Tensor]) -> tuple[list[Piece], list[str]]:
    """The pieces of `gm` in calling order, and the names of the nodes the graph returns."""
    owner, top = _owners(gm)
    nodes_by_piece: dict[int, list[fx.Node]] = {}
    for node, index in owner.items():
        nodes_by_piece.setdefault(index, []).append(node)
    order = sorted(nodes_by_piece)
    pieces, needed = [], set()
    for index in order:
        piece, used = _build_piece(gm, nodes_by_piece[index], weights, _label(index, top))
        pieces.append(piece)
        needed |= used
    out_node = next(iter(gm.graph.find_nodes(op="output")))
    results = [n.name for n in _flat_nodes(out_node.args[0])]
    needed |= set(results)
    for index, piece in zip(order, pieces, strict=True):
        _add_outputs(piece, [n for n in nodes_by_piece[index] if n.name in needed])
    return pieces, results


def _owners(gm: fx.GraphModule) -> tuple[dict[fx.Node, int], int]:
    """Piece index per compute node (-1 prologue, i layer i, N epilogue) and the last layer N-1."""
    owner, current, last_use = {}, -1, {}
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        reads = _flat_nodes((node.args, node.kwargs))
        layers = [layer_of(a.target) for a in reads if a.op == "placeholder"]
        layers = [i for i in layers if i is not None]
        if layers:
            current = max(current, *layers)
            last_use[current] = node
        owner[node] = current
    if not last_use:
        raise KilnError("piecewise lowering found no decoder layer in the graph")
    top = max(last_use)
    after_last = False
    for node in owner:  # nodes after the last read of the last layer: the epilogue
        if owner[node] == top and after_last:
            owner[node] = top + 1
        after_last = after_last or node is last_use[top]
    return owner, top


def _label(index: int, top: int) -> str:
    return "prologue" if index < 0 else "epilogue" if index > top else f"layer {index}"


def _flat_nodes(value) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(value, out.append)
    return out


def _is_size(node: fx.Node) -> bool:
    """A node whose value is a size (SymInt/int), recomputed where used instead of passed."""
    sizes = (int, torch.SymInt, torch.SymBool, torch.SymFloat)
    return isinstance(node.meta.get("val"), sizes) and node.op != "placeholder"


def _build_piece(gm, nodes, weights, label) -> tuple[Piece, set[str]]:
    """Copy `nodes` into a new graph; outside values become placeholders (sizes recomputed).
    Returns the piece (no outputs yet) and the names of outside tensors it reads."""
    graph = fx.Graph()
    local: dict[fx.Node, fx.Node] = {}
    bindings: list[tuple[str, str]] = []
    counts = {"w": 0, "kv": 0, "x": 0}
    members = set(nodes)

    def placeholder(role: str, source: fx.Node, name: str) -> fx.Node:
        node = graph.placeholder(name)
        node.meta["val"] = source.meta.get("val")
        bindings.append((role, source.target if role != "value" else source.name))
        return node

    def lookup(n: fx.Node) -> fx.Node:
        if n in local:
            return local[n]
        if n.op == "placeholder":
            role, prefix = ("weight", "w") if n.target in weights else ("input", None)
            if role == "input" and _LAYER_KV.match(n.target):
                prefix = "kv"
            name = n.target if prefix is None else f"{prefix}{counts[prefix]}"
            if prefix is not None:
                counts[prefix] += 1
            local[n] = placeholder(role, n, name)
        elif n not in members and _is_size(n):
            local[n] = graph.node_copy(n, lookup)
        elif n not in members:
            local[n] = placeholder("value", n, f"x{counts['x']}")
            counts["x"] += 1
        else:
            local[n] = graph.node_copy(n, lookup)
        return local[n]

    for node in nodes:
        lookup(node)
    piece_gm = fx.GraphModule(torch.nn.Module(), graph)
    piece_gm.meta["kiln_ranges"] = gm.meta.get("kiln_ranges", {})
    used = {name for role, name in bindings if role == "value"}
    return Piece(label, piece_gm, bindings), used


def _add_outputs(piece: Piece, nodes: list[fx.Node]) -> None:
    """Return `nodes` (original graph nodes owned by the piece) from the piece's graph."""
    by_name = {n.name: n for n in piece.gm.graph.nodes}
    piece.outputs = [n.name for n in nodes]
    piece.gm.graph.output(tuple(by_name[n.name] for n in nodes))
    piece.gm.graph.eliminate_dead_code()
    piece.gm.recompile()
    piece.digest = piece_hash(piece.gm)


def piece_hash(gm: fx.GraphModule) -> str:
    """sha256 of the piece's canonical text: equal for pieces that compile to the same code."""
    from passes.capture import canonical_text

    return hashlib.sha256(canonical_text(gm).encode()).hexdigest()


def distinct(pieces: list[Piece]) -> dict[str, list[Piece]]:
    """Pieces grouped by digest, in order of first use."""
    groups: dict[str, list[Piece]] = {}
    for piece in pieces:
        groups.setdefault(piece.digest, []).append(piece)
    return groups


def run_eager(pieces: list[Piece], weights: dict, step: dict) -> list[list[torch.Tensor]]:
    """Run the pieces in order on `step` (input name -> tensor); returns each piece's args."""
    env: dict[str, torch.Tensor] = {}
    args_per_piece = []
    for piece in pieces:
        args = [_bound(b, weights, step, env) for b in piece.bindings]
        args_per_piece.append(args)
        env.update(zip(piece.outputs, piece.gm(*args), strict=True))
    return args_per_piece


def _bound(binding: tuple[str, str], weights: dict, step: dict, env: dict):
    role, name = binding
    return weights[name] if role == "weight" else step[name] if role == "input" else env[name]


def lower_piecewise(
    passed, staging: Path, options, runnable: dict[str, str], ops, why, progress
) -> dict:
    """Compile each distinct piece once into `pieces/<digest>.pt2`; the manifest's `plan`
    says which package every piece of the step calls and with what."""
    from lowering.compile_pieces import compile_all
    from lowering.export import EXAMPLE_T, example_input

    align_first_layer(passed.gm)
    pieces, results = split(passed.gm, passed.weights)
    groups = distinct(pieces)
    (staging / "pieces.txt").write_text(
        "".join(f"# {p.label}: {p.digest[:16]}\n{p.gm.code}\n" for p in pieces)
    )
    step = {
        n.target: example_input(n.target, EXAMPLE_T, passed)
        for n in passed.gm.graph.find_nodes(op="placeholder")
        if n.target not in passed.weights
    }
    examples = run_eager(pieces, passed.weights, step)
    first_args = {p.digest: examples[pieces.index(p)] for p in reversed(pieces)}
    programs, inlined, launches = {}, set(), {}
    for digest, members in groups.items():
        args = first_args[digest]
        programs[digest], names = _export_inlined(members[0], args, options, runnable, launches)
        inlined |= names
    (staging / "pieces").mkdir()
    labels = {d: _group_label(members) for d, members in groups.items()}
    compile_all(programs, staging / "pieces", labels, progress)
    return _manifest(staging, pieces, groups, results, inlined, (runnable, ops, why, launches))


def _export_inlined(
    piece: Piece, args: list, options, runnable, launches: dict
) -> tuple[object, set[str]]:
    """The piece exported (T and the step's batch sizes dynamic) with its IR ops inlined or
    routed to in-graph kernels, as the monolithic lowering does for the whole graph."""
    from lowering.export import inline_references, kernels_in_graph

    with kernels_in_graph(piece.gm, runnable, launches) as in_graph:
        ep, inlined = inline_references(_export_piece(piece, args, options), runnable)
    return ep, set(inlined) | set(in_graph)


def _group_label(members: list[Piece]) -> str:
    if len(members) == 1:
        return members[0].label
    return f"{members[0].label} (shared by {len(members)})"


def _manifest(staging: Path, pieces, groups, results, inlined: set[str], table) -> dict:
    """The plan and, as for a monolithic package, the per-op table; the ops the packages call
    are read from the packages themselves. `table` is (runnable, ops, why, launches)."""
    from lowering.op_table import kernel_counts, op_table
    from lowering.package_calls import package_calls

    runnable, ops, why, launches = table
    calls = sorted({op for d in groups for op in package_calls(staging / f"pieces/{d[:16]}.pt2")})
    rows = op_table(ops, runnable, launches, calls, why)
    return {
        "lowering": AOTI_PIECEWISE,
        "pieces": {
            d[:16]: {"package": f"pieces/{d[:16]}.pt2", "labels": [p.label for p in members]}
            for d, members in groups.items()
        },
        "plan": [
            {"piece": p.digest[:16], "bindings": p.bindings, "outputs": p.outputs} for p in pieces
        ],
        "results": results,
        "inlined_ops": sorted(inlined),
        "calls": calls,
        "ops": rows,
        "kernels": {**kernel_counts(rows), "inductor": len(groups)},
    }


def _export_piece(piece: Piece, args: list, options):
    from torch.export import Dim, export

    from lowering.export import dynamic_dims

    class Graph(torch.nn.Module):
        def __init__(self, gm):
            super().__init__()
            self.gm = gm

        def forward(self, *args):
            return self.gm(*args)

    dims = dynamic_dims(Dim, options.max_num_tokens)
    dynamic = []
    for node, (role, name) in zip(piece.gm.graph.find_nodes(op="placeholder"), piece.bindings):
        if role == "weight":
            dynamic.append(None)
        elif role == "input":
            dynamic.append(dims.get("kv_caches" if _LAYER_KV.match(name) else name))
        else:
            dynamic.append(_value_dims(node, dims["input_ids"][0], piece.label))
    return export(Graph(piece.gm), tuple(args), dynamic_shapes=(tuple(dynamic),), strict=False)


def _value_dims(node: fx.Node, t, label: str) -> dict | None:
    """A boundary tensor's symbolic dimensions: each must be the token count T itself."""
    val = node.meta.get("val")
    out = {}
    for i, size in enumerate(getattr(val, "shape", ())):
        if isinstance(size, int):
            continue
        if not re.fullmatch(r"[su]\d+", str(size)):
            raise KilnError(
                f"piecewise lowering: {label} takes a value of shape {tuple(val.shape)}; only "
                "the token count may vary across pieces (use --lowering monolithic)"
            )
        out[i] = t
    return out or None
