"""The HTML page and its charts: every section has data or an explicit "no data yet" note."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from dashboard_samples import make_bench, make_compile, pass_record

from perf_dashboard import BenchRecord, charts, render_html

CHART_IDS = (
    "compile-phases",
    "pass-time",
    "pass-trend",
    "compile-trend",
    "kernel-providers",
    "throughput-latest",
    "ttft-latest",
    "itl-latest",
    "throughput-trend",
    "itl-trend",
    "startup-phases",
)
SECTIONS = ("phases", "passes", "trend", "kernels", "runtime", "pass-table", "startup")


def chart_points(html: str) -> dict[str, int]:
    found = re.findall(r'<svg class="chart" data-chart="([^"]+)" data-points="(\d+)"', html)
    return {name: int(n) for name, n in found}


def test_every_chart_is_drawn_with_data(filled_store):
    filled_store.add_bench(pass_record(created=1_790_000_700.0))  # the newest bench record
    html = render_html(filled_store)
    points = chart_points(html)
    assert set(points) == set(CHART_IDS)
    assert all(n > 0 for n in points.values()), points
    assert "No data yet" not in html
    assert points["compile-phases"] == 4  # two models x (cold, warm)
    assert points["throughput-latest"] == 4  # kiln and hf at two batch sizes


def test_cold_and_warm_compiles_show_with_their_phases(filled_store):
    html = render_html(filled_store)
    for entry_id, rec in filled_store.compile_entries():
        kind = "cold" if rec.cold else "warm"
        for phase, secs in rec.phases.items():  # each bar segment's tooltip
            assert f"#{entry_id} {kind} {rec.model}/cpu: {phase} = {charts.fmt(secs)}<" in html


def test_empty_store_says_no_data_in_every_section(store):
    html = render_html(store)
    assert chart_points(html) == {}
    for section in SECTIONS:
        body = html.split(f'<section id="{section}">')[1].split("</section>")[0]
        assert "No data yet" in body, section


def test_page_is_self_contained(filled_store):
    html = render_html(filled_store)
    assert "https://" not in html
    assert re.findall(r"http://[^\"]+", html) == ["http://www.w3.org/2000/svg"] * html.count("<svg")
    assert not re.search(r"<(link|img|iframe)\b", html)
    assert not re.search(r"<script[^>]*\bsrc=", html)


def test_text_from_records_is_escaped(store, rng):
    evil = "<script>alert(1)</script>"
    store.add_compile(make_compile(rng, cold=True, created=1_790_000_000.0, model=evil))
    store.add_bench(
        BenchRecord(bench="throughput", model="m", card='"><img src=x>', startup={evil: 0.4})
    )
    html = render_html(store)
    assert evil not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_bench_without_latency_skips_latency_charts(store, rng):
    rows = [{"engine": "kiln", "batch_size": 4, "input_len": 32, "output_len": 16, "tok_s": 88.5}]
    store.add_bench(BenchRecord(bench="throughput", model="m", card="cpu", results=rows))
    points = chart_points(render_html(store))
    assert points["throughput-latest"] == 1 and points["throughput-trend"] == 1
    assert "ttft-latest" not in points and "itl-latest" not in points


def test_kiln_row_shows_ratio_to_baseline(store, rng):
    rec = make_bench(rng, created=1_790_000_000.0)
    store.add_bench(rec)
    kiln, hf = rec.results[0], rec.results[1]
    assert f"{kiln['tok_s'] / hf['tok_s']:.2f}\u00d7" in render_html(store)


def test_kiln_serve_rows_are_not_a_baseline(store, rng):
    shape = {"batch_size": 8, "input_len": 64, "output_len": 16}
    rows = [
        {"engine": "kiln-serve", **shape, "tok_s": 300.0},
        {"engine": "hf", **shape, "tok_s": 120.0},
    ]
    store.add_bench(BenchRecord(bench="serve_load", model="m", card="cpu", results=rows))
    html = render_html(store)
    assert "2.50\u00d7" in html and "0.40\u00d7" not in html


def test_served_rows_name_their_api_servers(store):
    shape = {"batch_size": 32, "input_len": 128, "output_len": 64}
    rows = [
        {"engine": "kiln-offline", **shape, "tok_s": 900.0},
        {"engine": "kiln-serve", **shape, "tok_s": 800.0, "api_servers": 4},
        {"engine": "kiln-serve", **shape, "tok_s": 700.0, "api_servers": 1},
    ]
    store.add_bench(BenchRecord(bench="serve", model="m", card="cpu", results=rows))
    html = render_html(store)
    assert "kiln-serve (4 API servers)" in html
    assert "kiln-serve (1 API servers)" not in html and "kiln-serve bs=32" in html


@pytest.mark.parametrize(
    ("top", "expected"), [(7.3, [0, 2, 4, 6, 8]), (0.42, [0, 0.1, 0.2, 0.3, 0.4, 0.5]), (0, None)]
)
def test_nice_ticks_cover_the_top(top, expected):
    ticks = charts.nice_ticks(top)
    assert ticks[0] == 0 and ticks[-1] >= top
    if expected:
        assert ticks == pytest.approx(expected)


def test_stacked_bars_count_points_and_escape(rng):
    values = [rng.uniform(0.1, 5) for _ in range(3)]
    svg = charts.stacked_bars("x", "T<1>", ["a", "b", "c"], {"p&q": values}, y_label="s")
    assert 'data-points="3"' in svg and "T&lt;1&gt;" in svg and "p&amp;q" in svg
    assert svg.count("<rect") == 3


def test_line_trend_counts_only_present_points(rng):
    vals = [rng.uniform(1, 9), None, rng.uniform(1, 9)]
    svg = charts.line_trend("t", "T", ["r1", "r2", "r3"], {"cold": vals}, y_label="s")
    assert 'data-points="2"' in svg and svg.count("<circle") == 2 and "<polyline" in svg


def test_format_keeps_three_significant_digits():
    assert [charts.fmt(v) for v in (0.012345, 45.67, 1.0, 1234.5, 0)] == [
        "0.0123",
        "45.7",
        "1",
        "1,234",
        "0",
    ]


def test_dashboard_modules_do_not_import_torch():
    code = (
        "import sys, perf_dashboard, perf_dashboard.report, kiln.commands.dashboard;"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_summary_counts_records_and_can_hide_the_db_path(filled_store):
    html = render_html(filled_store)
    assert "4 compile record(s), 2 bench record(s)" in html and str(filled_store.path) in html
    assert str(filled_store.path) not in render_html(filled_store, show_path=False)


def test_only_the_newest_records_are_read(filled_store, monkeypatch):
    from perf_dashboard import report

    monkeypatch.setattr(report, "MAX_RECORDS", 1)
    html = render_html(filled_store)
    assert "(the newest 1 of each are shown)" in html
    assert chart_points(html)["compile-phases"] == 1


def test_passes_come_from_the_newest_cold_compile(store, rng):
    """A warm record may repeat the cached artifact's passes; they were not run again."""
    from dataclasses import replace

    cold = make_compile(rng, cold=True, created=1_790_000_000.0)
    warm = replace(make_compile(rng, cold=False, created=1_790_000_100.0), passes=cold.passes)
    store.add_compile(cold)
    store.add_compile(warm)
    passes = render_html(store).split('<section id="passes">')[1]
    assert passes.startswith("<h2>Passes</h2>") and "<h3>#1 cold demo/cpu," in passes
    assert chart_points(passes)["pass-trend"] == len(cold.passes)
