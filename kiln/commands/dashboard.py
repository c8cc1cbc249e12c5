"""`kiln dashboard`: write the compile/bench dashboard as one self-contained HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = "kiln-dashboard.html"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="write the compile and benchmark dashboard (HTML)",
        description=(
            "Render every recorded `kiln compile` and `kiln bench` run into one HTML file that "
            "opens offline (charts are inline SVG). `kiln serve` shows the same page at /dashboard."
        ),
    )
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help=f"HTML file to write ({DEFAULT_OUT})"
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help="dashboard database (default: KILN_DASHBOARD_DB or <cache dir>/dashboard.sqlite)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from kiln.errors import KilnError
    from perf_dashboard import DashboardStore, render_html

    if args.db is not None and not args.db.is_file():
        # An explicit path that does not exist is most likely a typo: don't create an empty db.
        raise KilnError(f"no dashboard database at {args.db}; drop --db to use the default")
    html = render_html(DashboardStore(args.db))
    out: Path = args.out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(html, encoding="utf-8")
    except OSError as e:
        raise KilnError(f"cannot write {out}: {e.strerror or e}") from None
    print(out.resolve())
    return 0
