"""Which fusion stopped matching because an earlier pass consumed its pattern.

A fusion's matches "alone" are counted on a dry run of the pipeline with every other fusion
left out (cleanup, quantization and padding still run, so quant fusions see their quant_fp8
nodes). A fusion that rewrites fewer in the real pipeline lost matches to an earlier fusion;
each earlier fusion is then dry-run alone before it to name the one(s) responsible:
"fuse_attn_quant: 2 matches alone, 0 in pipeline after fuse_rope_attention".

Dry runs work on a copy of the captured graph with fake weights (no data is copied or
quantized), so they are cheap next to the compile they describe.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import fx

from passes.base import Fusion, Pass, PassContext
from passes.graph import fake_mode_of


@dataclass(frozen=True)
class Interaction:
    name: str  # the fusion that lost matches
    alone: int  # matches with no other fusion before it
    in_pipeline: int  # rewrites in the pipeline
    after: tuple[str, ...]  # earlier fusions that, alone before it, take matches away

    def __str__(self) -> str:
        culprits = ", ".join(self.after) or "earlier fusions together"
        return (
            f"{self.name}: {self.alone} matches alone, {self.in_pipeline} in pipeline "
            f"after {culprits}"
        )


@dataclass
class Snapshot:
    """The captured graph and a fake-weight context, taken before the pipeline runs."""

    gm: fx.GraphModule
    ctx: PassContext

    @classmethod
    def take(cls, gm: fx.GraphModule, ctx: PassContext) -> Snapshot:
        mode = fake_mode_of(gm)

        def fake(t):
            return mode.from_tensor(t, static_shapes=True)

        weights = {name: fake(t) for name, t in ctx.weights.items()}
        return cls(copy_module(gm), replace(ctx, weights=weights, lm_head=fake(ctx.lm_head)))


def copy_module(gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule over a copy of `gm`'s graph (node meta copied shallowly)."""
    graph = fx.Graph()
    out = graph.graph_copy(gm.graph, {})
    graph.output(out)
    copy = fx.GraphModule(gm, graph)
    copy.meta.update(gm.meta)
    return copy


def find_interactions(
    pipeline: list[Pass], snapshot: Snapshot, rewrites: dict[str, int], apply
) -> tuple[dict[str, int], list[Interaction]]:
    """({fusion: matches alone}, fusions that lost matches); `apply(p, gm, ctx)` runs a pass
    as the manager does. `rewrites` is what each pass did in the real pipeline."""
    cfg = snapshot.ctx.cfg
    fusions = [p.name for p in pipeline if isinstance(p, Fusion) and p.enabled(cfg)]
    alone = _dry_run(pipeline, snapshot, set(), apply)
    found = []
    for name in fusions:
        if alone.get(name, 0) <= rewrites.get(name, 0):
            continue
        earlier = [q for q in fusions[: fusions.index(name)] if rewrites.get(q, 0)]
        after = tuple(
            q
            for q in earlier
            if _dry_run(pipeline, snapshot, {q}, apply, stop=name)[name] < alone[name]
        )
        found.append(Interaction(name, alone[name], rewrites.get(name, 0), after))
    return alone, found


def _dry_run(pipeline, snapshot: Snapshot, kept: set[str], apply, stop: str | None = None):
    """Run the pipeline on a copy, applying only the fusions in `kept`; return how many matches
    each enabled fusion finds at its place. Stops after `stop` (default: the last fusion)."""
    gm, ctx = copy_module(snapshot.gm), replace(snapshot.ctx, weights=dict(snapshot.ctx.weights))
    ctx.notes = []
    cfg = ctx.cfg
    counts: dict[str, int] = {}
    fusions = [p for p in pipeline if isinstance(p, Fusion) and p.enabled(cfg)]
    last = stop or (fusions[-1].name if fusions else None)
    for p in pipeline:
        if last is None or last in counts:
            break
        if not p.enabled(cfg):
            continue
        if isinstance(p, Fusion):
            counts[p.name] = len(p.find(gm, ctx))
            if p.name not in kept:
                continue
        apply(p, gm, ctx)
    return counts
