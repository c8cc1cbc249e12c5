"""The lookup key: what a warm start can compute without capturing or importing passes.

The cache key proper (docs/cache.md) hashes the captured graph, pass uuids and
implementation choices, which take a capture to know. A warm start must not pay for that, so
each artifact is also filed under a lookup key made of cheap inputs that determine the graph:
the checkpoint's config and weight files, the compile options, the target, the tool versions
and a hash of Kiln's own compiler source. Same lookup key => same graph => same cache key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SOURCE_DIRS = ("ir", "model_defs", "passes", "lowering", "compile_cache")
# Compiler inputs outside those folders: how `auto` dtypes resolve and the option defaults.
SOURCE_FILES = ("kiln/config.py",)
_ROOT = Path(__file__).resolve().parent.parent


def kiln_source_hash() -> str:
    """sha256 over Kiln's compiler source files (read, not imported)."""
    h = hashlib.sha256()
    files = [f for folder in SOURCE_DIRS for f in sorted((_ROOT / folder).rglob("*"))]
    for f in files + [_ROOT / name for name in SOURCE_FILES]:
        if f.suffix in (".py", ".json") and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(_ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def checkpoint_identity(path: Path) -> dict:
    """config.json's hash plus each weight file's name, size and mtime."""
    files = sorted(path.glob("*.safetensors"))
    return {
        "config_sha256": hashlib.sha256((path / "config.json").read_bytes()).hexdigest(),
        "weights": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files],
    }


def lookup_factors(path: Path, options: dict, target: dict) -> dict:
    from compile_cache import installed_versions

    return {
        "checkpoint": checkpoint_identity(path),
        "options": options,
        "target": target,
        "versions": installed_versions(),
        "kiln_source": kiln_source_hash(),
    }
