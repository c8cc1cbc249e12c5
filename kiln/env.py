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


# Inductor's and Triton's own caches; `compile_cache.configure_tool_caches` points them inside
# the Kiln cache so one persistent folder holds everything (a fresh Inductor folder costs ~9 s).
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
TRITON_CACHE_ENV = "TRITON_CACHE_DIR"


def export_default(name: str, value: Path, *, override: bool = False) -> Path:
    """Set environment variable `name` to `value` unless the user already set it (or
    `override`); returns the value in effect. Child processes inherit it."""
    current = os.environ.get(name)
    if current and not override:
        return Path(current).expanduser()
    os.environ[name] = str(value)
    return value


def api_key() -> str | None:
    """KILN_API_KEY: the bearer key `kiln serve` requires (same as --api-key)."""
    return os.environ.get("KILN_API_KEY") or None


def startup_report_path() -> Path | None:
    """KILN_STARTUP_REPORT=PATH: `kiln generate` writes its start-up phase timings (JSON) there;
    `kiln bench startup` sets it for each child process it times."""
    value = os.environ.get("KILN_STARTUP_REPORT")
    return Path(value) if value else None


def bytecode_cache_enabled() -> bool:
    """KILN_BYTECODE_CACHE=0 stops the CLI keeping torch's bytecode in the Kiln cache (see
    `compile_cache.tool_caches.configure_bytecode_cache`); anything else, or unset, allows it."""
    return os.environ.get("KILN_BYTECODE_CACHE", "1") != "0"


def cuda_prewarm_enabled() -> bool:
    """KILN_CUDA_PREWARM=0 stops `kiln generate`/`serve` starting the CUDA driver on a thread
    while torch imports (see `runtime.cuda_driver`); anything else, or unset, allows it."""
    return os.environ.get("KILN_CUDA_PREWARM", "1") != "0"


def startup_gc_pause_enabled() -> bool:
    """KILN_STARTUP_GC_PAUSE=0 keeps Python's cyclic collector running while `kiln generate`/
    `serve` start up (see `kiln.startup`); anything else, or unset, pauses it until ready."""
    return os.environ.get("KILN_STARTUP_GC_PAUSE", "1") != "0"


def blas_prewarm_enabled() -> bool:
    """KILN_BLAS_PREWARM=0 stops an engine's load running cuBLAS's first GEMM on a side thread
    (see `runtime.blas_warmup`); anything else, or unset, allows it."""
    return os.environ.get("KILN_BLAS_PREWARM", "1") != "0"


def compile_workers() -> int:
    """KILN_COMPILE_WORKERS=N: how many pieces a piecewise compile builds at once, each in a
    spawned process (default 1: one after another, in this process). Each worker pays its own
    start-up and C++ header precompile, which on a 2-core CPU costs more than it saves."""
    value = os.environ.get("KILN_COMPILE_WORKERS", "1")
    if not value.isdigit() or int(value) < 1:
        from kiln.errors import KilnError

        raise KilnError(f"KILN_COMPILE_WORKERS={value!r}: give a whole number >= 1")
    return int(value)


def load_threads() -> int:
    """KILN_LOAD_THREADS=N: threads that read checkpoint tensors and copy them into the model
    (default: the CPU count, at most 8; 1 reads them one after another)."""
    value = os.environ.get("KILN_LOAD_THREADS")
    if value is None:
        return max(1, min(8, os.cpu_count() or 1))
    if not value.isdigit() or int(value) < 1:
        from kiln.errors import KilnError

        raise KilnError(f"KILN_LOAD_THREADS={value!r}: give a whole number >= 1")
    return int(value)
