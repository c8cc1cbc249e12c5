"""`PassManager`: runs the pipeline in order and records a `CompileTrace`.

Per pass it records wall time, rewrites and node counts before/after; with
`KILN_DUMP_GRAPHS=DIR` it writes the canonical graph text before and after each pass. After the
pipeline it asks every enabled fusion whether a pattern it should have fused is still there,
and which fusion lost matches to an earlier one (`passes/interactions.py`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import fx

from kiln import env
from passes.base import Fusion, Pass, PassContext
from passes.capture import canonical_text
from passes.graph import num_nodes, op_counts, refresh_meta
from passes.interactions import Snapshot, find_interactions


@dataclass(frozen=True)
class PassRecord:
    name: str
    uuid: str
    enabled: bool
    wall_s: float = 0.0
    rewrites: int = 0
    nodes_before: int = 0
    nodes_after: int = 0


@dataclass
class CompileTrace:
    """What the passes did to one graph; the dashboard and `kiln passes` read it."""

    graph_hash: str = ""  # of the captured (unpassed) graph
    capture_s: float = 0.0
    passes: list[PassRecord] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # "pass: node" for unfused patterns
    alone: dict[str, int] = field(default_factory=dict)  # fusion -> matches with no other fusion
    # "fuse_x: 4 matches alone, 0 in pipeline after fuse_y" (see passes/interactions.py)
    interactions: list[str] = field(default_factory=list)
    op_counts_before: dict[str, int] = field(default_factory=dict)
    op_counts_after: dict[str, int] = field(default_factory=dict)

    def rewrites(self, name: str) -> int:
        return next(r.rewrites for r in self.passes if r.name == name)

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = [f"{'pass':<26} {'on':<3} {'rewrites':>8} {'alone':>6} {'nodes':>11} {'ms':>8}"]
        for r in self.passes:
            nodes = f"{r.nodes_before}->{r.nodes_after}" if r.enabled else "-"
            alone = self.alone.get(r.name, "-") if r.enabled else "-"
            lines.append(
                f"{r.name:<26} {'yes' if r.enabled else 'no':<3} {r.rewrites:>8} {alone:>6} "
                f"{nodes:>11} {r.wall_s * 1e3:>8.1f}"
            )
        lines += [f"missed fusion: {m}" for m in self.missed]
        lines += [f"stopped matching: {i}" for i in self.interactions]
        return "\n".join(lines)


class PassManager:
    def __init__(self, pipeline: list[Pass], dump_dir: Path | None = None):
        self.pipeline = pipeline
        self.dump_dir = dump_dir if dump_dir is not None else env.dump_graphs_dir()

    def run(self, gm: fx.GraphModule, ctx: PassContext, trace: CompileTrace, on_pass=None):
        """Run every pass in order; `on_pass(record, gm, ctx)` is called after each one."""
        trace.op_counts_before = dict(op_counts(gm))
        snapshot = Snapshot.take(gm, ctx)
        for index, p in enumerate(self.pipeline):
            record = self.run_one(index, p, gm, ctx)
            trace.passes.append(record)
            if on_pass is not None:
                on_pass(record, gm, ctx)
        trace.missed = self.missed_fusions(gm, ctx)
        trace.op_counts_after = dict(op_counts(gm))
        rewrites = {r.name: r.rewrites for r in trace.passes if r.enabled}
        trace.alone, lost = find_interactions(self.pipeline, snapshot, rewrites, apply_pass)
        trace.interactions = [str(i) for i in lost]
        return trace

    def run_one(self, index: int, p: Pass, gm: fx.GraphModule, ctx: PassContext) -> PassRecord:
        if not p.enabled(ctx.cfg):
            return PassRecord(p.name, p.uuid(), enabled=False)
        before = num_nodes(gm)
        self._dump(index, p.name, "before", gm)
        start = time.perf_counter()
        rewrites = apply_pass(p, gm, ctx)
        wall = time.perf_counter() - start
        self._dump(index, p.name, "after", gm)
        return PassRecord(p.name, p.uuid(), True, wall, rewrites, before, num_nodes(gm))

    def missed_fusions(self, gm: fx.GraphModule, ctx: PassContext) -> list[str]:
        missed = []
        for p in self.pipeline:
            if isinstance(p, Fusion) and p.enabled(ctx.cfg):
                missed += [f"{p.name}: {m.root.name}" for m in p.find(gm, ctx)]
        return missed

    def _dump(self, index: int, name: str, when: str, gm: fx.GraphModule) -> None:
        if self.dump_dir is None:
            return
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        (self.dump_dir / f"{index:02d}-{name}-{when}.txt").write_text(canonical_text(gm))


def apply_pass(p: Pass, gm: fx.GraphModule, ctx: PassContext) -> int:
    """Run one pass and leave the graph valid (ordered, shapes known, code regenerated)."""
    rewrites = p(gm, ctx)
    if rewrites:
        _legalize(gm)
        if p.reshapes_weights:  # other passes set meta['val'] on the nodes they add
            refresh_meta(gm, ctx.weights)
        gm.recompile()
    return rewrites


def _legalize(gm: fx.GraphModule) -> None:
    """Fusions insert new nodes before the pattern's root; if a value taken over by the fused op
    was used before that point, restore a topological order."""
    try:
        gm.graph.lint()
    except RuntimeError:
        from torch.fx.passes.tools_common import legalize_graph

        legalize_graph(gm)
        gm.graph.lint()
