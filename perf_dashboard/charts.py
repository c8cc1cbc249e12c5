"""Small inline-SVG charts: stacked bars, horizontal bars and a line trend.

The dashboard must open from a file with no network, so charts are plain SVG strings with no
script. Every chart's `<svg>` carries `class="chart"`, `data-chart="<id>"` and
`data-points="N"` (the number of values drawn) so tests, and the page's own self-check, can
tell a chart with data from an empty frame. All text is escaped; hovering a bar or point shows
its exact value through an SVG `<title>`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

# Colour-blind-safe palette (Okabe-Ito, then Tableau tones), in the order series appear.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#4E79A7",
    "#9C755F",
    "#B07AA1",
    "#76B7B2",
    "#59A14F",
)
WIDTH = 680
PLOT_TOP = 40
PLOT_LEFT = 64
PLOT_RIGHT = 16


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def fmt(value: float) -> str:
    """Three significant digits, no exponent for everyday magnitudes (0.0123, 45.6, 1230)."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round axis ticks from 0 to at least `top` (steps of 1, 2, 2.5 or 5 times a power of 10)."""
    top = top if top > 0 else 1.0
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _flat(label: str) -> str:
    return label.replace("\n", " ")


def short(label: str, limit: int = 18) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


def _open_svg(chart_id: str, title: str, height: int, points: int) -> list[str]:
    return [
        f'<svg class="chart" data-chart="{escape(chart_id)}" data-points="{points}"'
        f' role="img" aria-label="{escape(title)}" viewBox="0 0 {WIDTH} {height}"'
        f' width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{WIDTH / 2}" y="20" text-anchor="middle">{escape(title)}</text>',
    ]


def _legend(names: Sequence[str]) -> str:
    items = "".join(
        f'<span class="key"><i style="background:{color(i)}"></i>{escape(n)}</span>'
        for i, n in enumerate(names)
    )
    return f'<div class="legend">{items}</div>' if len(names) > 1 else ""


def _figure(svg: list[str], legend: str = "") -> str:
    return f'<figure class="chart-box">{"".join(svg)}</svg>{legend}</figure>'


def _y_axis(parts: list[str], ticks: list[float], y_of, plot_right: float, label: str) -> None:
    for tick in ticks:
        y = y_of(tick)
        parts.append(
            f'<line class="grid" x1="{PLOT_LEFT}" x2="{plot_right}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{PLOT_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{fmt(tick)}</text>"
        )
    mid = (PLOT_TOP + y_of(0)) / 2
    parts.append(
        f'<text class="axis-label" transform="translate(14 {mid:.1f}) rotate(-90)"'
        f' text-anchor="middle">{escape(label)}</text>'
    )


def _x_labels(parts: list[str], labels: Sequence[str], xs: Sequence[float], base: float) -> None:
    """Horizontal labels under the axis; a newline in a label starts a second line.

    When points are dense only every `stride`-th label is written (each needs ~70 px); the
    tooltip of every bar or point still names its record.
    """
    slot = xs[1] - xs[0] if len(xs) > 1 else 240.0
    stride = max(1, math.ceil(70 / slot))
    for i, (label, x) in enumerate(zip(labels, xs, strict=True)):
        if i % stride:
            continue
        room = min(slot * stride, 240, 2 * min(x, WIDTH - x))  # stay inside the frame
        chars = max(6, int(room / 6.4))
        lines = label.split("\n")
        spans = "".join(
            f'<tspan x="{x:.1f}" dy="{0 if n == 0 else 13}">{escape(short(line, chars))}</tspan>'
            for n, line in enumerate(lines)
        )
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{base + 16:.1f}" text-anchor="middle">'
            f"<title>{escape(' '.join(lines))}</title>{spans}</text>"
        )


def stacked_bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    y_label: str,
) -> str:
    """One vertical bar per label, stacked from `series` (name -> one value per label)."""
    height, bottom = 300, 56
    base = height - bottom
    totals = [sum(vals[i] for vals in series.values()) for i in range(len(labels))]
    ticks = nice_ticks(max(totals, default=0))
    plot_right = WIDTH - PLOT_RIGHT

    def y_of(v: float) -> float:
        return base - (base - PLOT_TOP) * v / ticks[-1]

    parts = _open_svg(chart_id, title, height, len(labels))
    _y_axis(parts, ticks, y_of, plot_right, y_label)
    slot = (plot_right - PLOT_LEFT) / max(len(labels), 1)
    bar_w = min(56.0, slot * 0.7)
    xs = [PLOT_LEFT + slot * (i + 0.5) for i in range(len(labels))]
    for i, (label, x) in enumerate(zip(labels, xs, strict=True)):
        level = 0.0
        for s, (name, vals) in enumerate(series.items()):
            value = vals[i]
            if value <= 0:
                continue
            top, bottom_y = y_of(level + value), y_of(level)
            parts.append(
                f'<rect x="{x - bar_w / 2:.1f}" y="{top:.1f}" width="{bar_w:.1f}"'
                f' height="{max(bottom_y - top, 0.5):.1f}" fill="{color(s)}">'
                f"<title>{escape(_flat(label))}: {escape(name)} = {fmt(value)}</title></rect>"
            )
            level += value
        parts.append(
            f'<text class="value" x="{x:.1f}" y="{y_of(level) - 4:.1f}" text-anchor="middle">'
            f"{fmt(level)}</text>"
        )
    parts.append(f'<line class="axis" x1="{PLOT_LEFT}" x2="{plot_right}" y1="{base}" y2="{base}"/>')
    _x_labels(parts, labels, xs, base)
    return _figure(parts, _legend(list(series)))


def bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    x_label: str,
) -> str:
    """Horizontal bars, one per label (long names such as pass names stay readable)."""
    row, left, top = 22, 200, PLOT_TOP + 4
    height = top + row * len(labels) + 44
    ticks = nice_ticks(max(values, default=0), count=4)
    right = WIDTH - 56  # room for the value printed after the longest bar

    def x_of(v: float) -> float:
        return left + (right - left) * v / ticks[-1]

    parts = _open_svg(chart_id, title, height, len(values))
    axis_y = top + row * len(labels)
    for tick in ticks:
        x = x_of(tick)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{axis_y}"/>'
            f'<text class="tick" x="{x:.1f}" y="{axis_y + 14}" text-anchor="middle">{fmt(tick)}</text>'
        )
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + row * i
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y + row * 0.68:.1f}" text-anchor="end">'
            f"<title>{escape(label)}</title>{escape(short(label, 28))}</text>"
            f'<rect x="{left}" y="{y + 3}" width="{max(x_of(value) - left, 0.5):.1f}"'
            f' height="{row - 6}" fill="{color(0)}"><title>{escape(label)} = {fmt(value)}</title>'
            f'</rect><text class="value" x="{x_of(value) + 4:.1f}" y="{y + row * 0.68:.1f}">'
            f"{fmt(value)}</text>"
        )
    parts.append(
        f'<text class="axis-label" x="{(left + right) / 2:.1f}" y="{axis_y + 34}"'
        f' text-anchor="middle">{escape(x_label)}</text>'
    )
    return _figure(parts)


def line_trend(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    y_label: str,
) -> str:
    """One line per series across `labels` (records in time order); None: not measured there."""
    height, bottom = 290, 56
    base = height - bottom
    present = [v for vals in series.values() for v in vals if v is not None]
    ticks = nice_ticks(max(present, default=0))
    plot_right = WIDTH - PLOT_RIGHT

    def y_of(v: float) -> float:
        return base - (base - PLOT_TOP) * v / ticks[-1]

    parts = _open_svg(chart_id, title, height, len(present))
    _y_axis(parts, ticks, y_of, plot_right, y_label)
    inset = 40  # keeps the first rotated x label inside the frame
    slot = (plot_right - PLOT_LEFT - 2 * inset) / max(len(labels) - 1, 1)
    xs = [PLOT_LEFT + inset + slot * i for i in range(len(labels))]
    if len(labels) == 1:
        xs = [(PLOT_LEFT + plot_right) / 2]
    for s, (name, vals) in enumerate(series.items()):
        parts.extend(_polylines(vals, xs, y_of, color(s)))
        for label, x, v in zip(labels, xs, vals, strict=True):
            if v is not None:
                parts.append(
                    f'<circle cx="{x:.1f}" cy="{y_of(v):.1f}" r="4" fill="{color(s)}">'
                    f"<title>{escape(_flat(label))}: {escape(name)} = {fmt(v)}</title></circle>"
                )
    parts.append(f'<line class="axis" x1="{PLOT_LEFT}" x2="{plot_right}" y1="{base}" y2="{base}"/>')
    _x_labels(parts, labels, xs, base)
    return _figure(parts, _legend(list(series)))


def _polylines(vals: Sequence[float | None], xs: Sequence[float], y_of, stroke: str) -> list[str]:
    """One line through the present values; a record without this series is stepped over."""
    points = [f"{x:.1f},{y_of(v):.1f}" for x, v in zip(xs, vals, strict=True) if v is not None]
    if len(points) < 2:
        return []
    return [
        f'<polyline fill="none" stroke="{stroke}" stroke-width="2" points="{" ".join(points)}"/>'
    ]
