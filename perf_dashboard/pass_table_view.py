"""Dashboard section of pass on/off tables: `bench="passes"` records
(`benchmarks/pass_table.py`), one table per quantization group, one line per variant.

A variant's rows carry its `passes` toggles ("default": the pipeline as registered) and its
`quantization`. Each distinct (batch, input, output) of a record is one measure; its figure
is the rows' ITL p50 where they have one (decode), else their TTFT p50 (the prefill row).
Ratios are a variant's figure over its group's first default row: above 1.00x the variant is
slower, so the pass it turns off saves that much. A later default row is the run's repeat
(its ratio is the noise), and a variant whose figures equal the default's to the last digit
reused them (its post-pass graph is the default's: the same code).
"""

from __future__ import annotations

from html import escape
from typing import Any

from perf_dashboard.html_parts import bench_label, empty, flat, number, section, table, when
from perf_dashboard.records import BenchRecord

Entries = list[tuple[int, BenchRecord]]
PASS_BENCH = "passes"
MAX_OLDER = 5
TITLE = "Passes on/off: what each pass is worth"
INTRO = (
    "Each default-on pass turned off in turn (`--passes=-name`), measured through its compiled "
    "artifact: decode ITL p50 and the prefill's TTFT p50, and each over the group's default. "
    "Above 1.00\u00d7: slower without the pass. The default's repeat shows the run's noise."
)
NO_TABLE = (
    "run benchmarks/pass_table.py on the GPU machine (`python -m benchmarks.pass_table --out "
    "DIR`), then import `DIR/pass_table.record.json` with `kiln bench --record FILE`."
)

Shape = tuple[int, int, int]


def is_pass_table(rec: BenchRecord) -> bool:
    return rec.bench == PASS_BENCH


def pass_table_section(entries: Entries) -> str:
    runs = [(i, rec) for i, rec in entries if is_pass_table(rec) and rec.results]
    if not runs:
        return section("pass-table", TITLE, INTRO, empty(NO_TABLE))
    row_id, rec = runs[-1]
    body = f"<h3>Latest: {escape(flat(bench_label(row_id, rec)))}, {when(rec.created)}</h3>"
    body += record_tables(rec)
    for older_id, older in reversed(runs[:-1][-MAX_OLDER:]):
        label = escape(flat(bench_label(older_id, older)))
        body += f"<details><summary>{label}, {when(older.created)}</summary>"
        body += record_tables(older) + "</details>"
    return section("pass-table", TITLE, INTRO, body)


def record_tables(rec: BenchRecord) -> str:
    shapes = list(dict.fromkeys(_shape(r) for r in rec.results))
    headers = ["passes", "figures"] + [_measure_name(rec.results, s) for s in shapes]
    headers += [f"{_short(s)} vs default" for s in shapes]
    out = ""
    for group, variants in _groups(rec.results).items():
        base = _figures(variants[0][1], shapes)
        rows, seen = [], set()
        for passes, var_rows in variants:
            figures = _figures(var_rows, shapes)
            label = f"{passes} (again)" if passes in seen else passes
            seen.add(passes)
            ratios = [_ratio(f, b) for f, b in zip(figures, base, strict=True)]
            rows.append([label, _provenance(passes, var_rows, variants[0][1])]
                        + [number(f) for f in figures] + ratios)  # fmt: skip
        out += f"<h3>quantization: {escape(group)}</h3>"
        out += table(headers, rows, numeric=range(2, len(headers)))
    return out


def _groups(rows: tuple[dict[str, Any], ...]) -> dict[str, list[tuple[str, list[dict]]]]:
    """quantization -> [(passes, that variant's rows)], in record order; a variant's rows are
    consecutive, so a default measured twice is two entries."""
    groups: dict[str, list[tuple[str, list[dict]]]] = {}
    for r in rows:
        variants = groups.setdefault(r.get("quantization") or "none", [])
        passes = r.get("passes") or "default"
        if not variants or variants[-1][0] != passes or _shape(r) in map(_shape, variants[-1][1]):
            variants.append((passes, []))
        variants[-1][1].append(r)
    return groups


def _shape(row: dict[str, Any]) -> Shape:
    return row["batch_size"], row["input_len"], row["output_len"]


def _figure(row: dict[str, Any]) -> float | None:
    return row["itl_p50_ms"] if row.get("itl_p50_ms") is not None else row.get("ttft_p50_ms")


def _figures(rows: list[dict[str, Any]], shapes: list[Shape]) -> list[float | None]:
    by_shape = {_shape(r): _figure(r) for r in rows}
    return [by_shape.get(s) for s in shapes]


def _measure_name(rows: tuple[dict[str, Any], ...], shape: Shape) -> str:
    decode = any(r.get("itl_p50_ms") is not None for r in rows if _shape(r) == shape)
    return f"{'ITL' if decode else 'TTFT'} p50 ms {_short(shape)}"


def _short(shape: Shape) -> str:
    batch, inp, out = shape
    return f"bs{batch} {inp}\u2192{out}"


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}\u00d7" if value is not None and base else "\u2013"


def _provenance(passes: str, rows: list[dict], default_rows: list[dict]) -> str:
    if rows is default_rows:
        return "measured"
    if passes != "default" and [_figure(r) for r in rows] == [_figure(r) for r in default_rows]:
        return "default's (same graph)"
    return "measured"
