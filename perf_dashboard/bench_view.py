"""Dashboard sections about `kiln bench` records: throughput/latency and startup breakdown."""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

from perf_dashboard import charts
from perf_dashboard.html_parts import (
    bench_label,
    empty,
    flat,
    number,
    ordered_names,
    seconds,
    section,
    table,
    when,
)
from perf_dashboard.records import BenchRecord

Entries = list[tuple[int, BenchRecord]]
MAX_BARS = 12
MAX_TREND = 60
MAX_SERIES = 8
STARTUP_GOAL_S = 2.0  # the goal: a cached artifact serving in under 2 seconds

NO_BENCH = (
    "run `kiln bench`, or import a run made on the GPU machine with `kiln bench --record FILE`."
)


def engine_label(row: dict[str, Any]) -> str:
    """The row's engine, with the API server processes of a server that had several."""
    servers = row.get("api_servers") or 1
    return row["engine"] + (f" ({servers:g} API servers)" if servers > 1 else "")


def row_label(row: dict[str, Any]) -> str:
    return f"{engine_label(row)} bs={row['batch_size']} {row['input_len']}\u2192{row['output_len']}"


def _shape(row: dict[str, Any]) -> tuple[int, int, int]:
    return row["batch_size"], row["input_len"], row["output_len"]


def _is_kiln(row: dict[str, Any]) -> bool:
    """Kiln's own rows ("kiln", "kiln-serve"); every other engine is a baseline."""
    return row["engine"].startswith("kiln")


def runtime_section(entries: Entries) -> str:
    intro = (
        "Throughput and latency from `kiln bench`, with the baseline engine measured in the same "
        "run on the same card. Labels read engine, batch size, input\u2192output tokens."
    )
    title = "Runtime: throughput and latency"
    runs = [(i, rec) for i, rec in entries if rec.results]
    if not runs:
        return section("runtime", title, intro, empty(NO_BENCH))
    row_id, rec = runs[-1]
    body = f"<h3>Latest run: {escape(flat(bench_label(row_id, rec)))}, {when(rec.created)}</h3>"
    body += _latest_charts(rec) + _results_table(rec)
    body += _trend(
        "throughput-trend", "Throughput across runs", runs[-MAX_TREND:], "tok_s", "tok/s"
    )
    body += _trend("itl-trend", "ITL p50 across runs", runs[-MAX_TREND:], "itl_p50_ms", "ms")
    return section("runtime", title, intro, body)


def _latest_charts(rec: BenchRecord) -> str:
    rows = rec.results
    out = charts.bars(
        "throughput-latest",
        f"Throughput, {rec.card}",
        [row_label(r) for r in rows],
        [r["tok_s"] for r in rows],
        x_label="tokens per second",
    )
    for key, name in (("ttft_p50_ms", "TTFT p50"), ("itl_p50_ms", "ITL p50")):
        timed = [r for r in rows if r[key] is not None]
        if timed:
            chart_id = f"{key.split('_')[0]}-latest"
            labels, values = [row_label(r) for r in timed], [r[key] for r in timed]
            out += charts.bars(chart_id, f"{name}, {rec.card}", labels, values, x_label="ms")
    return out


def _results_table(rec: BenchRecord) -> str:
    baseline = {_shape(r): r["tok_s"] for r in rec.results if not _is_kiln(r)}
    rows = []
    for r in rec.results:
        base = baseline.get(_shape(r)) if _is_kiln(r) else None
        ratio = f"{r['tok_s'] / base:.2f}\u00d7" if base else "\u2013"
        rows.append(
            [
                engine_label(r),
                r["batch_size"],
                r["input_len"],
                r["output_len"],
                number(r["tok_s"]),
                ratio,
            ]
            + [number(r[k]) for k in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")]
            + [number(r["peak_memory_gb"])]
        )
    headers = ["engine", "batch", "in", "out", "tok/s", "vs baseline"]
    headers += ["TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms", "peak GB"]
    return table(headers, rows, numeric=range(1, 11))


def _trend(chart_id: str, title: str, runs: Entries, key: str, unit: str) -> str:
    """One line per (engine, shape) seen most often, one point per run that measured it."""
    seen = Counter(row_label(r) for _, rec in runs for r in rec.results if r[key] is not None)
    if not seen:
        return ""
    names = [name for name, _ in seen.most_common(MAX_SERIES)]
    series = {}
    for name in names:
        series[name] = [
            next((r[key] for r in rec.results if row_label(r) == name and r[key] is not None), None)
            for _, rec in runs
        ]
    labels = [bench_label(i, rec) for i, rec in runs]
    return charts.line_trend(chart_id, title, labels, series, y_label=unit)


def startup_section(entries: Entries) -> str:
    intro = (
        "Where the time goes between `kiln serve` starting and the first request being served: "
        f"imports, manifest, kernels, weights, KV cache, graph capture. Goal: under {STARTUP_GOAL_S:g} s."
    )
    runs = [(i, rec) for i, rec in entries if rec.startup][-MAX_BARS:]
    if not runs:
        msg = "run `kiln bench` with a startup benchmark, or import one with --record."
        return section("startup", "Startup breakdown", intro, empty(msg))
    names = ordered_names(rec.startup for _, rec in runs)
    series = {n: [rec.startup.get(n, 0.0) for _, rec in runs] for n in names}
    labels = [bench_label(i, rec) for i, rec in runs]
    chart = charts.stacked_bars(
        "startup-phases", "Startup by phase", labels, series, y_label="seconds"
    )
    row_id, rec = runs[-1]
    total = sum(rec.startup.values())
    rows = [[n, seconds(s), f"{100 * s / (total or 1):.0f}%"] for n, s in rec.startup.items()]
    rows.append(["total", seconds(total), "100%"])
    verdict = "within" if total < STARTUP_GOAL_S else "over"
    latest = (
        f"<h3>Latest: {escape(flat(bench_label(row_id, rec)))}, total {escape(seconds(total))} "
        f"({verdict} the {STARTUP_GOAL_S:g} s goal)</h3>"
    )
    latest += table(["phase", "time", "share"], rows, numeric=(1, 2))
    return section("startup", "Startup breakdown", intro, chart + latest)
