"""Dashboard sections about compiles: phases (cold vs warm), passes, trend, kernel providers."""

from __future__ import annotations

from html import escape

from perf_dashboard import charts
from perf_dashboard.html_parts import (
    compile_label,
    empty,
    flat,
    ordered_names,
    seconds,
    section,
    size,
    table,
    when,
)
from perf_dashboard.records import CompileRecord

Entries = list[tuple[int, CompileRecord]]
MAX_BARS = 12  # stacked bars stay readable up to about this many records
MAX_TREND = 60
MAX_TABLE = 30
TOP_PASSES = 6

NO_COMPILES = "run `kiln compile MODEL --target cpu` (every compile adds a record)."


def phases_section(entries: Entries) -> str:
    intro = (
        "Each bar is one compile, split into its phases in the order they ran. A warm compile "
        "(artifact already cached) should be a thin bar of lookup and load."
    )
    if not entries:
        return section("phases", "Compile time by phase: cold vs warm", intro, empty(NO_COMPILES))
    recent = entries[-MAX_BARS:]
    names = ordered_names(rec.phases for _, rec in recent)
    series = {n: [rec.phases.get(n, 0.0) for _, rec in recent] for n in names}
    labels = [compile_label(i, rec) for i, rec in recent]
    chart = charts.stacked_bars(
        "compile-phases", "Compile time by phase", labels, series, y_label="seconds"
    )
    body = chart + _cold_warm_table(entries) + _compiles_table(entries[-MAX_TABLE:])
    return section("phases", "Compile time by phase: cold vs warm", intro, body)


def _cold_warm_table(entries: Entries) -> str:
    latest: dict[tuple[str, str], dict[bool, CompileRecord]] = {}
    for _, rec in entries:
        latest.setdefault((rec.model, rec.target), {})[rec.cold] = rec
    rows = []
    for (model, target), by_kind in latest.items():
        cold, warm = by_kind.get(True), by_kind.get(False)
        cold_s = cold.total_seconds if cold else None
        warm_s = warm.total_seconds if warm else None
        ratio = f"{cold_s / warm_s:.1f}\u00d7" if cold_s and warm_s else "\u2013"
        rows.append([model, target, seconds(cold_s), seconds(warm_s), ratio])
    headers = ["model", "target", "latest cold", "latest warm", "warm speed-up"]
    return "<h3>Latest cold and warm per model and target</h3>" + table(
        headers, rows, numeric=(2, 3, 4)
    )


def _compiles_table(entries: Entries) -> str:
    rows = []
    for row_id, rec in reversed(entries):
        ran = rec.passes if rec.cold else ()  # a warm compile ran no pass
        slowest = max(ran, key=lambda p: p.seconds, default=None)
        rows.append(
            [
                f"#{row_id}",
                when(rec.created, short=True),
                rec.model,
                rec.target,
                "cold" if rec.cold else "warm",
                seconds(rec.total_seconds),
                f"{slowest.name} ({seconds(slowest.seconds)})" if slowest else "\u2013",
                size(rec.artifact_bytes),
                rec.key[:10],
                (rec.git_commit or "\u2013")[:10],
                rec.host,
            ]
        )
    headers = ["record", "when (UTC)", "model", "target", "kind", "total", "slowest pass"]
    headers += ["artifact", "key", "commit", "host"]
    return "<h3>Compiles, newest first</h3>" + table(headers, rows, numeric=(5, 7))


def passes_section(entries: Entries) -> str:
    intro = (
        "What each pass of the pipeline cost and did: wall time, rewrites, and how the graph "
        "grew or shrank. The slowest pass is highlighted."
    )
    # Cold compiles ran the passes; a warm record may repeat the cached artifact's pass list.
    with_passes = [(i, rec) for i, rec in entries if rec.passes and rec.cold]
    with_passes = with_passes or [(i, rec) for i, rec in entries if rec.passes]
    if not with_passes:
        msg = "no compile has recorded passes yet (warm compiles skip them; run a cold compile)."
        return section("passes", "Passes", intro, empty(msg))
    row_id, rec = with_passes[-1]
    body = f"<h3>{escape(flat(compile_label(row_id, rec)))}, {when(rec.created)}</h3>"
    body += _passes_table(rec)
    body += charts.bars(
        "pass-time",
        f"Time per pass, {flat(compile_label(row_id, rec))}",
        [p.name for p in rec.passes],
        [p.seconds for p in rec.passes],
        x_label="seconds",
    )
    body += _pass_trend(with_passes[-MAX_TREND:])
    for older_id, older in reversed(with_passes[-6:-1]):
        label = escape(f"{flat(compile_label(older_id, older))}, {when(older.created)}")
        body += f"<details><summary>{label}</summary>{_passes_table(older)}</details>"
    return section("passes", "Passes", intro, body)


def _passes_table(rec: CompileRecord) -> str:
    total = sum(p.seconds for p in rec.passes) or 1.0
    slowest = max(rec.passes, key=lambda p: p.seconds)
    rows, classes = [], []
    for p in rec.passes:
        rows.append(
            [
                p.name,
                seconds(p.seconds),
                f"{100 * p.seconds / total:.0f}%",
                p.rewrites,
                f"{p.nodes_before} \u2192 {p.nodes_after}",
                f"{p.node_delta:+d}",
            ]
        )
        classes.append("slowest" if p is slowest else "")
    headers = ["pass", "time", "share", "rewrites", "nodes", "node delta"]
    return table(headers, rows, numeric=(1, 2, 3, 5), row_classes=classes)


def _pass_trend(with_passes: Entries) -> str:
    """Time of the costliest passes across compiles: a jump points at the pass that regressed."""
    worst: dict[str, float] = {}
    for _, rec in with_passes:
        for p in rec.passes:
            worst[p.name] = max(worst.get(p.name, 0.0), p.seconds)
    top = sorted(worst, key=worst.__getitem__, reverse=True)[:TOP_PASSES]
    series = {
        name: [
            next((p.seconds for p in rec.passes if p.name == name), None) for _, rec in with_passes
        ]
        for name in top
    }
    labels = [compile_label(i, rec) for i, rec in with_passes]
    title = f"Pass time across compiles (top {len(top)} passes)"
    return charts.line_trend("pass-trend", title, labels, series, y_label="seconds")


def trend_section(entries: Entries) -> str:
    intro = (
        "Total compile time of each record in the order they were made; cold and warm compiles "
        "are separate lines. A step up in the cold line is a regression to explain."
    )
    if not entries:
        return section("trend", "Compile time across records", intro, empty(NO_COMPILES))
    recent = entries[-MAX_TREND:]
    labels = [compile_label(i, rec) for i, rec in recent]
    series = {
        "cold": [rec.total_seconds if rec.cold else None for _, rec in recent],
        "warm": [None if rec.cold else rec.total_seconds for _, rec in recent],
    }
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    chart = charts.line_trend(
        "compile-trend", "Total compile time", labels, series, y_label="seconds"
    )
    return section("trend", "Compile time across records", intro, chart)


def kernels_section(entries: Entries) -> str:
    intro = (
        "How many kernels each provider (native, triton, helion, library...) supplied. A shift "
        "towards `native` usually means a faster implementation was rejected for this target."
    )
    with_kernels = [(i, rec) for i, rec in entries if rec.kernels][-MAX_BARS:]
    if not with_kernels:
        msg = "no compile has recorded kernels yet."
        return section("kernels", "Kernels by provider", intro, empty(msg))
    providers = ordered_names(rec.kernels for _, rec in with_kernels)
    series = {p: [float(rec.kernels.get(p, 0)) for _, rec in with_kernels] for p in providers}
    labels = [compile_label(i, rec) for i, rec in with_kernels]
    chart = charts.stacked_bars(
        "kernel-providers", "Kernels by provider", labels, series, y_label="kernels"
    )
    row_id, rec = with_kernels[-1]
    count = sum(rec.kernels.values()) or 1
    rows = [[p, n, f"{100 * n / count:.0f}%"] for p, n in rec.kernels.items()]
    latest = f"<h3>{escape(flat(compile_label(row_id, rec)))}</h3>"
    latest += table(["provider", "kernels", "share"], rows, numeric=(1, 2))
    return section("kernels", "Kernels by provider", intro, chart + latest)
