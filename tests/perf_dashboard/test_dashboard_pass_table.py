"""The pass on/off section: a recorded table renders per variant with its ratios to the
default, and stays out of the runtime section's runs."""

from __future__ import annotations

import re

import pytest
from dashboard_samples import DECODE, pass_record

from perf_dashboard import BenchRecord, render_html
from perf_dashboard.fields import RecordError


def section(html: str, anchor: str) -> str:
    return html.split(f'<section id="{anchor}">')[1].split("</section>")[0]


def tables(body: str) -> dict[str, list[list[str]]]:
    """quantization group -> the rows of its table, header first, as cell texts."""
    out = {}
    for group, table in re.findall(r"<h3>quantization: (\w+)</h3>(.*?)</table>", body, re.S):
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
        out[group] = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r) for r in rows]
    return out


def test_a_recorded_pass_table_renders_per_variant_with_ratios_to_the_default(store):
    store.add_bench(pass_record())
    body = section(render_html(store), "pass-table")
    groups = tables(body)
    assert set(groups) == {"none", "fp8"}
    header, *rows = groups["none"]
    assert header == ["passes", "figures", "ITL p50 ms bs1 128\u219264",
                      "ITL p50 ms bs32 128\u219264", "TTFT p50 ms bs1 2048\u21922",
                      "bs1 128\u219264 vs default", "bs32 128\u219264 vs default",
                      "bs1 2048\u21922 vs default"]  # fmt: skip
    assert rows == [
        ["default", "measured", "5", "8", "100", "1.00\u00d7", "1.00\u00d7", "1.00\u00d7"],
        ["-fuse_add_rms_norm", "measured", "5.5", "8.8", "125",
         "1.10\u00d7", "1.10\u00d7", "1.25\u00d7"],
        ["-eliminate_noops", "default&#x27;s (same graph)", "5", "8", "100",
         "1.00\u00d7", "1.00\u00d7", "1.00\u00d7"],
        ["default (again)", "measured", "5.1", "8", "98", "1.02\u00d7", "1.00\u00d7", "0.98\u00d7"],
    ]  # fmt: skip
    fp8 = groups["fp8"][1:]
    assert [r[0] for r in fp8] == ["default", "-fuse_act_quant"]
    assert fp8[1][5:] == ["1.10\u00d7", "1.00\u00d7", "1.10\u00d7"]  # over fp8's own default


def test_the_newest_table_is_shown_and_older_ones_fold(store):
    store.add_bench(pass_record(1_790_000_000.0))
    newer = pass_record(1_790_000_900.0)
    store.add_bench(newer)
    body = section(render_html(store), "pass-table")
    latest = body.split("<details>")[0]
    assert "#2 NVIDIA H200 llama3-8b" in latest and body.count("<details>") == 1


def test_pass_tables_stay_out_of_the_runtime_section(store):
    store.add_bench(pass_record())
    html = render_html(store)
    assert "No data yet" in section(html, "runtime")
    assert "No data yet" not in section(html, "pass-table")


def test_no_pass_table_names_the_command_that_makes_one(store):
    body = section(render_html(store), "pass-table")
    assert "No data yet" in body and "benchmarks/pass_table.py" in body


def test_row_labels_round_trip_and_a_bad_one_names_its_field():
    rec = pass_record()
    again = BenchRecord.from_json(rec.to_json())
    assert again.results == rec.results and again.results[0]["passes"] == "default"
    plain = {"engine": "kiln", "batch_size": 1, **DECODE, "tok_s": 10.0}
    assert "passes" not in BenchRecord(bench="t", model="m", card="c", results=[plain]).results[0]
    with pytest.raises(RecordError, match=r"results\[0\]\.passes"):
        BenchRecord(bench="t", model="m", card="c", results=[{**plain, "passes": 3}])
