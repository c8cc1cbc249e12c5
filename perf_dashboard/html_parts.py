"""HTML building blocks shared by the dashboard sections: tables, notes, labels, units.

Every piece of text that came from a record goes through `html.escape` here, so a model name
such as `<script>` shows as text and never runs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from html import escape

from perf_dashboard.charts import fmt
from perf_dashboard.records import BenchRecord, CompileRecord


def when(created: float, *, short: bool = False) -> str:
    if short:  # table cells; the column header says UTC
        return time.strftime("%m-%d %H:%M", time.gmtime(created))
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(created))


def size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def seconds(value: float | None) -> str:
    return "\u2013" if value is None else f"{fmt(value)} s"


def number(value: float | None) -> str:
    return "\u2013" if value is None else fmt(value)


def compile_label(row_id: int, rec: CompileRecord) -> str:
    """Chart label; the newline splits it into two lines under a bar ("#3 cold" / "demo/cpu")."""
    return f"#{row_id} {'cold' if rec.cold else 'warm'}\n{rec.model}/{rec.target}"


def bench_label(row_id: int, rec: BenchRecord) -> str:
    return f"#{row_id} {rec.card}\n{rec.model}"


def flat(label: str) -> str:
    """A two-line chart label on one line, for headings and tooltips."""
    return label.replace("\n", " ")


def prose(text: str) -> str:
    """Escaped text in which `backticked` spans become <code> (escaping first keeps it safe)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text))


def empty(message: str) -> str:
    """The explicit "nothing here yet" note a section shows instead of a blank chart."""
    return f'<p class="empty">No data yet: {prose(message)}</p>'


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Iterable[int] = (),
    row_classes: Sequence[str] | None = None,
) -> str:
    """A plain table; `numeric` column indexes are right-aligned. All cells are escaped."""
    right = set(numeric)
    head = "".join(
        f"<th{' class=num' if i in right else ''}>{escape(h)}</th>" for i, h in enumerate(headers)
    )
    body = []
    for r, row in enumerate(rows):
        css = row_classes[r] if row_classes and row_classes[r] else ""
        cells = "".join(
            f"<td{' class=num' if i in right else ''}>{escape(str(c))}</td>"
            for i, c in enumerate(row)
        )
        body.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    rows_html = "".join(body)
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows_html}</tbody></table></div>"
    )


def section(anchor: str, title: str, intro: str, body: str) -> str:
    return (
        f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>'
        f'<p class="intro">{prose(intro)}</p>{body}</section>'
    )


def ordered_names(maps: Iterable[dict[str, float] | dict[str, int]]) -> list[str]:
    """Keys of several dicts in order of first appearance (phases keep their run order)."""
    names: dict[str, None] = {}
    for mapping in maps:
        for key in mapping:
            names.setdefault(key, None)
    return list(names)
