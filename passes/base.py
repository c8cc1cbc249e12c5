"""The Pass contract, the context passes share, and `Fusion`: a pass declared as patterns.

A pass has a `name`, a one-line `description`, a `phase` (see `passes.pipeline.PHASES`),
`default_on`, `uuid()` (hash of its source file and its config: it goes into the
compile-cache key), `enabled(cfg)`, and `__call__(gm, ctx) -> int` (how many rewrites it
made). It joins the pipeline with `@register_pass`. Passes edit the graph in place; they never
touch targets or devices beyond what `PassContext` says.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import sys
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import fx

from model_defs.config import ModelConfig
from passes.config import PassConfig
from passes.graph import infer_meta, remove_dead
from passes.pattern import Match, Op, match_at


@dataclass
class PassContext:
    """Mutable state of one compile: weights by placeholder name, the LM head, padding results."""

    cfg: PassConfig
    model_cfg: ModelConfig
    weights: dict[str, torch.Tensor]
    lm_head: torch.Tensor  # [V(+pad), H]; logits are computed outside the graph
    token_buckets: tuple[int, ...] = ()  # set by the padding pass; () = run T as given
    notes: list[str] = field(default_factory=list)


class Pass:
    name: ClassVar[str]
    description: ClassVar[str]
    phase: ClassVar[str]  # one of passes.pipeline.PHASES
    default_on: ClassVar[bool] = True  # False: runs only when `--passes +name` asks for it
    optional: ClassVar[bool] = True  # False: `--passes none` cannot turn it off
    # True if the pass changes weight shapes: the manager then re-propagates every node's
    # meta['val']. Passes that only add nodes set meta['val'] on them (`infer_meta`).
    reshapes_weights: ClassVar[bool] = False

    def applies(self, cfg: PassConfig) -> bool:
        """Prerequisites besides the toggles (e.g. quantization passes need --quantization)."""
        return True

    def enabled(self, cfg: PassConfig) -> bool:
        if not self.applies(cfg):
            return False
        return not self.optional or cfg.toggles.is_on(self.name, self.default_on)

    def uuid(self) -> str:
        source = inspect.getsource(sys.modules[type(self).__module__])
        config = repr(dataclasses.asdict(self)) if dataclasses.is_dataclass(self) else ""
        return hashlib.sha256(f"{source}\n{config}".encode()).hexdigest()[:16]

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> int:
        raise NotImplementedError


class Fusion(Pass):
    """A pass declared as patterns over IR ops plus one `replace` function.

    `patterns` are tried at every node in graph order (the node is the pattern's root, which
    must be named "root"). `takes_over` names the matched nodes whose uses outside the match
    the replacement provides; any other matched node used outside the match blocks the fusion.
    `replace(graph, m, ctx)` builds the new nodes (inserted before the root) and returns
    {name: node} or {name: (node-or-None per tuple output)} for "root" and `takes_over`.
    """

    patterns: ClassVar[tuple[Op, ...]]
    takes_over: ClassVar[tuple[str, ...]] = ()

    def check(self, m: Match, ctx: PassContext) -> bool:
        """Extra conditions on a structural match (same eps, same group size, ...)."""
        return True

    def replace(self, graph: fx.Graph, m: Match, ctx: PassContext) -> dict:
        raise NotImplementedError

    def find(self, gm: fx.GraphModule, ctx: PassContext) -> list[Match]:
        """Every match the pass would rewrite now (the pipeline's missed-fusion check)."""
        found = []
        for node in gm.graph.nodes:
            m = self._match(node, ctx)
            if m is not None:
                found.append(m)
        return found

    def __call__(self, gm: fx.GraphModule, ctx: PassContext) -> int:
        rewrites, erased = 0, set()
        for node in list(gm.graph.nodes):
            if node in erased:
                continue
            m = self._match(node, ctx)
            if m is not None:
                erased |= self._apply(gm.graph, m, ctx)
                rewrites += 1
        if rewrites:
            remove_dead(gm)  # outputs of fused ops nobody reads (e.g. the last residual)
        return rewrites

    def _match(self, node: fx.Node, ctx: PassContext) -> Match | None:
        if node.op != "call_function":
            return None
        for pattern in self.patterns:
            m = match_at(pattern, node)
            if m is not None and self._self_contained(m) and self.check(m, ctx):
                return m
        return None

    def _self_contained(self, m: Match) -> bool:
        inside = set(m.nodes)
        covered = {m.bindings[n] for n in ("root", *self.takes_over) if n in m.bindings}
        return all(
            n in covered or all(u in inside for u in n.users) for n in m.nodes if n is not m.root
        )

    def _apply(self, graph: fx.Graph, m: Match, ctx: PassContext) -> set[fx.Node]:
        inside, existing = set(m.nodes), set(graph.nodes)
        with graph.inserting_before(m.root):
            replacement = self.replace(graph, m, ctx)
        for node in graph.nodes:  # later matches in this pass may read the new nodes' shapes
            if node not in existing:
                infer_meta(node)
        erased: set[fx.Node] = set()
        for name, new in replacement.items():
            erased |= _redirect(graph, m.bindings[name], new, inside)
        for node in m.nodes:  # root first: each erasure frees the inputs listed after it
            if not node.users:
                graph.erase_node(node)
                erased.add(node)
        return erased


def _redirect(graph: fx.Graph, old: fx.Node, new, inside: set[fx.Node]) -> set[fx.Node]:
    """Point every use of `old` outside the match at `new` (per tuple element if a tuple).

    Returns the getitem nodes it erased on the way."""
    if isinstance(new, fx.Node):
        old.replace_all_uses_with(new, delete_user_cb=lambda user: user not in inside)
        return set()
    erased = set()
    for user in list(old.users):
        if user in inside:
            continue
        index = user.args[1]  # a getitem of the tuple `old` returned
        if new[index] is None:
            raise AssertionError(f"replacement leaves output {index} of {old.name} undefined")
        user.replace_all_uses_with(new[index])
        graph.erase_node(user)
        erased.add(user)
    return erased
