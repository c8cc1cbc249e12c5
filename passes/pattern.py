"""Patterns over IR ops, written as nested calls, and a matcher for them.

    op(kiln.rms_norm, op(aten.add, Var("x"), Var("residual"), name="add"), Var("w"), Var("eps"),
       name="root")

matches `rms_norm(add(x, residual), w, eps)`. `Var` binds any node or literal (the same name
twice must bind the same thing); literals must equal; `op(...)` must be a call of that target
with exactly those positional arguments. Named ops bind the matched node. Matching starts at a
candidate root node and walks its arguments, so it never backtracks.

A producer with several outputs feeding one consumer (a diamond) is written once, named, and
its outputs taken with `out(producer, i)`; a named op met again must be the same node:

    rope = op(kiln.rotary_embedding, Var("positions"), Var("q"), Var("k"), Var("cache"),
              Var("is_neox"), name="rope")
    op(kiln.attention, out(rope, 0), out(rope, 1), Var("v"), ..., name="root")

matches attention(getitem(r, 0), getitem(r, 1), v, ...) with r = rotary_embedding(...) one
node (`FuseRopeAttention`).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

from torch import fx


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Op:
    targets: tuple
    args: tuple
    name: str | None = None


def op(target, *args, name: str | None = None) -> Op:
    """A call of `target` (or any of a tuple of targets) with `args` (patterns or literals)."""
    targets = target if isinstance(target, tuple) else (target,)
    return Op(targets, args, name)


def out(producer: Op, index: int) -> Op:
    """Output `index` of a multi-output op: `getitem(producer, index)`."""
    return op(operator.getitem, producer, index)


@dataclass
class Match:
    root: fx.Node
    nodes: list[fx.Node] = field(default_factory=list)  # every matched call, root first
    bindings: dict[str, object] = field(default_factory=dict)

    def __getitem__(self, name: str):
        return self.bindings[name]


def match_at(pattern: Op, node: fx.Node) -> Match | None:
    """Match `pattern` with `node` as its root, or None."""
    m = Match(root=node)
    return m if _match(pattern, node, m) else None


def _match(pat, value, m: Match) -> bool:
    if isinstance(pat, Var):
        if pat.name in m.bindings:
            return _same(m.bindings[pat.name], value)
        m.bindings[pat.name] = value
        return True
    if isinstance(pat, Op):
        if not isinstance(value, fx.Node) or value.op != "call_function":
            return False
        if pat.name and pat.name in m.bindings:  # met again (a diamond): the same node
            return m.bindings[pat.name] is value
        if value.target not in pat.targets or value.kwargs or value in m.nodes:
            return False
        if len(value.args) != len(pat.args):
            return False
        m.nodes.append(value)
        if pat.name:
            m.bindings[pat.name] = value
        return all(_match(p, a, m) for p, a in zip(pat.args, value.args, strict=True))
    return _same(pat, value)


def _same(a, b) -> bool:
    if isinstance(a, fx.Node) or isinstance(b, fx.Node):
        return a is b
    return type(a) is type(b) and a == b
