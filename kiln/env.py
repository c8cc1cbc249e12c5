"""Every environment variable Kiln reads, declared once: name, type, default and help.

`SETTINGS` is the registry (`kiln env` prints it); the functions below are the typed getters
the rest of the code calls. Nothing else in Kiln reads `os.environ` for a KILN_* variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.errors import KilnError

_OFF, _ON = ("0", "false", "no", "off"), ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Setting:
    """One KILN_* variable. `kind` is str, path, flag (1/0), count (a whole number >= 1) or
    choice (one of `choices`)."""

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _PARSERS:
            raise ValueError(f"Setting.kind={self.kind!r}: use one of {', '.join(_PARSERS)}")
        if self.kind == "choice" and self.default not in self.choices:
            raise ValueError(f"Setting {self.name}: default {self.default!r} not in choices")

    def raw(self) -> str | None:
        """The variable's text, None when unset or empty."""
        return os.environ.get(self.name) or None

    def get(self) -> Any:
        """The typed value in effect: parsed from the environment, else the default."""
        text = self.raw()
        return self.default if text is None else _PARSERS[self.kind](self, text)


def _parse_path(setting: Setting, text: str) -> Path:
    return Path(text).expanduser()


def _parse_flag(setting: Setting, text: str) -> bool:
    value = text.strip().lower()
    if value not in _OFF + _ON:
        raise KilnError(f"{setting.name}={text!r}: use 1 (on) or 0 (off)")
    return value in _ON


def _parse_choice(setting: Setting, text: str) -> str:
    if text not in setting.choices:
        raise KilnError(f"{setting.name}={text!r}: choose one of {', '.join(setting.choices)}")
    return text


def _parse_count(setting: Setting, text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise KilnError(f"{setting.name}={text!r}: give a whole number >= 1")
    return int(text)


_PARSERS: dict[str, Callable[[Setting, str], Any]] = {
    "str": lambda setting, text: text,
    "path": _parse_path,
    "flag": _parse_flag,
    "choice": _parse_choice,
    "count": _parse_count,
}

SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("KILN_CACHE_DIR", "path", None,
                "Kiln's cache folder (artifacts, tool caches, demo model); default "
                "$XDG_CACHE_HOME/kiln or ~/.cache/kiln"),
        Setting("KILN_DASHBOARD_DB", "path", None,
                "the dashboard's SQLite database; default <cache dir>/dashboard.sqlite"),
        Setting("KILN_DUMP_GRAPHS", "path", None,
                "write the graph before and after each pass into this folder"),
        Setting("KILN_STARTUP_REPORT", "path", None,
                "`kiln generate` writes its start-up phase timings (JSON) here; `kiln bench "
                "startup` sets it for each process it times"),
        Setting("KILN_API_KEY", "str", None,
                "the bearer key `kiln serve` requires on /v1/* (same as --api-key)"),
        Setting("KILN_STEP_TRACE", "path", None,
                "`kiln serve` appends one JSON line per engine step to this file: when the core "
                "ran it, its decodes and prefill tokens, when the server got it, the request ids "
                "it advanced (benchmarks/serve_profile.py reads it)"),
        Setting("KILN_GPU_LOWERING", "choice", "aoti",
                "GPU-native lowering: aoti (AOTInductor package) or jit (exported program run "
                "under torch.compile at load, for hosts whose AOTInductor packages cannot load)",
                ("aoti", "jit")),
        Setting("KILN_BYTECODE_CACHE", "flag", True,
                "keep torch's Python bytecode in the Kiln cache (the CLI's first import then "
                "compiles nothing)"),
        Setting("KILN_CUDA_PREWARM", "flag", True,
                "`kiln generate`/`serve` start the CUDA driver on a thread while torch imports"),
        Setting("KILN_STARTUP_GC_PAUSE", "flag", True,
                "`kiln generate`/`serve` pause Python's cyclic collector until the engine is "
                "built, `kiln compile` until it ends (kiln/startup.py)"),
        Setting("KILN_CORE_FORK", "flag", True,
                "`kiln serve` forks its engine core from the server process while that is "
                "single-threaded and torch-free (runtime/engine_core.py); 0: spawn a fresh "
                "interpreter"),
        Setting("KILN_GRAPHS_AFTER_READY", "flag", True,
                "`kiln serve`'s engine core reports ready before capturing its step CUDA "
                "graphs and captures them after its first step or idle wait "
                "(runtime/engine_core.py); 0: it captures them during its load"),
        Setting("KILN_BLAS_PREWARM", "flag", True,
                "an engine's load runs cuBLAS's first GEMM on a side thread (runtime/blas_warmup.py)"),
        Setting("KILN_COMPILE_WORKERS", "count", 1,
                "pieces a piecewise compile builds at once, each in a spawned process (1: one "
                "after another in this process; each worker pays its own start-up and C++ "
                "header precompile)"),
        Setting("KILN_KERNEL_THREADS", "count", None,
                "threads a plan compile builds cubins on (Triton's ptxas runs as a subprocess); "
                "default the CPU count, at most 4"),
        Setting("KILN_WEIGHT_STREAM", "flag", True,
                "engines stream the weights into one arena on threads from the start of the "
                "process (runtime/weight_stream.py); 0: the plain loader reads them"),
        Setting("KILN_LOAD_THREADS", "count", None,
                "threads that read checkpoint tensors and copy them into the model; default the "
                "CPU count, at most 8 (a GPU engine's weight stream, which runs beside "
                "torch's import: one fewer)"),
    )
}  # fmt: skip


def cache_dir() -> Path:
    """KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln."""
    explicit = SETTINGS["KILN_CACHE_DIR"].get()
    if explicit is not None:
        return explicit
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kiln"


def dump_graphs_dir() -> Path | None:
    return SETTINGS["KILN_DUMP_GRAPHS"].get()


def dashboard_db() -> Path:
    return SETTINGS["KILN_DASHBOARD_DB"].get() or cache_dir() / "dashboard.sqlite"


def api_key() -> str | None:
    return SETTINGS["KILN_API_KEY"].get()


def startup_report_path() -> Path | None:
    return SETTINGS["KILN_STARTUP_REPORT"].get()


def step_trace_path() -> Path | None:
    return SETTINGS["KILN_STEP_TRACE"].get()


def gpu_lowering() -> str:
    return SETTINGS["KILN_GPU_LOWERING"].get()


def bytecode_cache_enabled() -> bool:
    return SETTINGS["KILN_BYTECODE_CACHE"].get()


def cuda_prewarm_enabled() -> bool:
    return SETTINGS["KILN_CUDA_PREWARM"].get()


def startup_gc_pause_enabled() -> bool:
    return SETTINGS["KILN_STARTUP_GC_PAUSE"].get()


def core_fork_enabled() -> bool:
    return SETTINGS["KILN_CORE_FORK"].get()


def graphs_after_ready() -> bool:
    return SETTINGS["KILN_GRAPHS_AFTER_READY"].get()


def blas_prewarm_enabled() -> bool:
    return SETTINGS["KILN_BLAS_PREWARM"].get()


def compile_workers() -> int:
    return SETTINGS["KILN_COMPILE_WORKERS"].get()


def kernel_threads() -> int:
    return SETTINGS["KILN_KERNEL_THREADS"].get() or min(4, os.cpu_count() or 1)


def weight_stream_enabled() -> bool:
    return SETTINGS["KILN_WEIGHT_STREAM"].get()


def load_threads() -> int:
    return SETTINGS["KILN_LOAD_THREADS"].get() or max(1, min(8, os.cpu_count() or 1))


def stream_threads() -> int:
    """An early weight stream's threads: it runs while the main thread imports torch, so by
    default it leaves that thread a core."""
    return SETTINGS["KILN_LOAD_THREADS"].get() or max(1, min(8, (os.cpu_count() or 2) - 1))


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
