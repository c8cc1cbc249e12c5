"""Every environment variable Kiln reads, in one place."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln."""
    explicit = os.environ.get("KILN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kiln"


def dump_graphs_dir() -> Path | None:
    """KILN_DUMP_GRAPHS=DIR: write the graph before and after each pass."""
    value = os.environ.get("KILN_DUMP_GRAPHS")
    return Path(value) if value else None


def dashboard_db() -> Path:
    """KILN_DASHBOARD_DB, else <cache dir>/dashboard.sqlite."""
    value = os.environ.get("KILN_DASHBOARD_DB")
    return Path(value) if value else cache_dir() / "dashboard.sqlite"
