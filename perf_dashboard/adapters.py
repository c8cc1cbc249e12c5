"""Turn what other stages already record into dashboard records, without importing them.

`passes.manager.CompileTrace` imports torch, so the trace is read by attribute (duck typing)
rather than by type: the dashboard stays torch-free and the pass manager stays unaware of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from perf_dashboard.records import PassRecord


def pass_records(trace_passes: Iterable[Any]) -> tuple[PassRecord, ...]:
    """`CompileTrace.passes` (objects or dicts with name, wall_s, rewrites, nodes_before,
    nodes_after, enabled) -> PassRecords; disabled passes did nothing and are left out."""
    out = []
    for p in trace_passes:
        get = p.get if isinstance(p, dict) else lambda k, d=None, p=p: getattr(p, k, d)
        if not get("enabled", True):
            continue
        out.append(
            PassRecord(
                name=get("name"),
                seconds=get("wall_s", get("seconds")),
                rewrites=get("rewrites"),
                nodes_before=get("nodes_before"),
                nodes_after=get("nodes_after"),
            )
        )
    return tuple(out)
