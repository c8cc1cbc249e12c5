"""The dashboard page: one self-contained HTML string (inline CSS and SVG, no network).

`kiln dashboard --out FILE` writes it and `kiln serve` returns it at `/dashboard`; both call
`render_html(store)`. A tiny inline script checks that every chart has data and records the
result on `<body data-ok=...>`, which the headless-browser test reads back.
"""

from __future__ import annotations

import time
from html import escape

from perf_dashboard import bench_view, compile_view, pass_table_view
from perf_dashboard.store import DashboardStore

MAX_RECORDS = 500  # newest records read per kind; charts show fewer

_CSS = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5b6475; --line: #d9dde5; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--ink); background: #f5f6f8; }
header { background: #1d2330; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c7ccd6; }
header code { background: #343b4b; color: #fff; }
nav a { color: #fff; margin-right: 14px; font-size: 13px; }
main { max-width: 1280px; margin: 0 auto; padding: 8px 24px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 16px 20px; margin: 18px 0; }
h2 { margin: 0 0 4px; font-size: 18px; }
h3 { margin: 18px 0 6px; font-size: 14px; color: var(--muted); }
.intro { margin: 0 0 10px; color: var(--muted); }
.empty { padding: 14px; background: #fff8e6; border: 1px dashed #e0b44c; border-radius: 6px; }
.note { color: var(--muted); font-style: italic; }
figure.chart-box { margin: 8px 0 14px; }
svg.chart { max-width: 100%; height: auto; background: #fff; font-size: 11px; }
svg .chart-title { font-size: 14px; font-weight: 600; fill: var(--ink); }
svg .tick, svg .value { fill: var(--muted); }
svg .axis-label { fill: var(--ink); font-size: 12px; }
svg .grid { stroke: #eceef2; }
svg .axis { stroke: #8a93a3; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; margin: 2px 0 0 64px; }
.legend i { display: inline-block; width: 11px; height: 11px; margin-right: 5px;
            vertical-align: -1px; border-radius: 2px; }
table { border-collapse: collapse; min-width: 60%; font-size: 13px; }
.table-wrap { overflow-x: auto; margin: 4px 0 12px; }
th, td { white-space: nowrap; padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; }
th { background: #f0f2f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.slowest td { background: #fdecea; font-weight: 600; }
details { margin: 6px 0; } summary { cursor: pointer; color: var(--muted); }
code { background: #f0f2f5; padding: 0 3px; border-radius: 3px; }
"""

# Runs in the page: every chart must declare data-points > 0 and draw at least one mark.
_SELF_CHECK = """
(function () {
  var bad = [];
  var charts = document.querySelectorAll("svg.chart");
  for (var i = 0; i < charts.length; i++) {
    var c = charts[i];
    var n = parseInt(c.getAttribute("data-points") || "0", 10);
    if (!(n > 0) || c.querySelectorAll("rect, circle").length === 0) {
      bad.push(c.getAttribute("data-chart"));
    }
  }
  document.body.setAttribute("data-charts", String(charts.length));
  document.body.setAttribute("data-ok", bad.length ? "missing:" + bad.join(",") : "yes");
})();
"""

_ERROR_HOOK = (
    'window.addEventListener("error", function (e) {'
    ' document.documentElement.setAttribute("data-js-error", String(e.message)); });'
)

_NAV = (
    ("phases", "Phases"),
    ("passes", "Passes"),
    ("trend", "Trend"),
    ("kernels", "Kernels"),
    ("runtime", "Runtime"),
    ("pass-table", "Passes on/off"),
    ("startup", "Startup"),
)


def render_html(store: DashboardStore, *, show_path: bool = True) -> str:
    """The whole dashboard for `store` as one HTML document.

    `show_path=False` leaves the database's file path off the page (for the HTTP server,
    which should not tell clients about its filesystem).
    """
    compiles = store.compile_entries(limit=MAX_RECORDS)
    benches = store.bench_entries(limit=MAX_RECORDS)
    # A pass on/off table's rows are variants of one engine, not runs to trend: its own section.
    runs = [(i, rec) for i, rec in benches if not pass_table_view.is_pass_table(rec)]
    sections = [
        compile_view.phases_section(compiles),
        compile_view.passes_section(compiles),
        compile_view.trend_section(compiles),
        compile_view.kernels_section(compiles),
        bench_view.runtime_section(runs),
        pass_table_view.pass_table_section(benches),
        bench_view.startup_section(runs),
    ]
    summary = _summary(store, len(compiles), len(benches), show_path)
    return _page(summary, "".join(sections))


def _summary(
    store: DashboardStore, shown_compiles: int, shown_benches: int, show_path: bool
) -> str:
    num_compiles, num_benches = store.counts()
    text = f"{num_compiles} compile record(s), {num_benches} bench record(s)"
    if (shown_compiles, shown_benches) != (num_compiles, num_benches):
        text += f" (the newest {MAX_RECORDS} of each are shown)"
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    where = f" from <code>{escape(str(store.path))}</code>" if show_path else ""
    return f"{text}{where}; generated {made}"


def _page(summary: str, body: str) -> str:
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in _NAV)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Kiln compile dashboard</title>"
        f"<style>{_CSS}</style><script>{_ERROR_HOOK}</script></head>"
        '<body data-ok="pending"><header><h1>Kiln compile dashboard</h1>'
        f"<p>{summary}</p><nav>{nav}</nav></header>"
        f"<main>{body}</main><script>{_SELF_CHECK}</script></body></html>\n"
    )
