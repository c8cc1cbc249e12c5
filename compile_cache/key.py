"""Cache keys: the sha256 of every factor that shapes a compiled artifact.

A key is a pure function of a plain, JSON-shaped dict of named factors (graph hash, model
config, dtype, quantization, parallelism, pass uuids, implementation choices, target, tool
versions, `cache_format`). The factors are stored in the manifest, so a miss can be explained
by naming the factor paths that differ (`diff_factors`). Nothing here knows how the factors
were computed, and nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

# Bump when the artifact layout or manifest schema changes: every older entry then misses.
CACHE_FORMAT = 1

KeyFactors = dict[str, Any]
"""Named key factors: str keys; values None, bool, int, finite float, str, lists, dicts."""

TOOL_PACKAGES = ("torch", "triton", "helion", "kiln")


class _Missing:
    """Marks a factor present on one side of a diff only (distinct from a JSON null)."""

    def __repr__(self) -> str:
        return "<absent>"


MISSING: Any = _Missing()


def normalize_factors(factors: KeyFactors) -> KeyFactors:
    """A JSON-shaped copy of `factors` (tuples become lists) with `cache_format` filled in.

    What is hashed is exactly what is stored in the manifest, so explaining a miss compares
    the same values the key was computed from.
    """
    if not isinstance(factors, dict):
        raise TypeError(f"key factors must be a dict, got {type(factors).__name__}")
    normal = _plain(factors, "factors")
    normal.setdefault("cache_format", CACHE_FORMAT)
    return normal


def canonical_json(factors: KeyFactors) -> str:
    """One spelling per value: sorted keys, no whitespace, no NaN."""
    return json.dumps(
        normalize_factors(factors),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def compute_key(factors: KeyFactors) -> str:
    """The cache key: sha256 hex of the canonical JSON of the normalized factors."""
    return hashlib.sha256(canonical_json(factors).encode("utf-8")).hexdigest()


def diff_factors(a: KeyFactors, b: KeyFactors) -> list[tuple[str, Any, Any]]:
    """Every leaf path whose value differs, as (dotted path, value in a, value in b).

    Dicts are walked (`versions.torch`); lists are compared whole (`passes`), since an
    inserted pass shifts every index after it. A side lacking a path shows `MISSING`.
    """
    out: list[tuple[str, Any, Any]] = []
    _diff(normalize_factors(a), normalize_factors(b), "", out)
    return out


def flatten_factors(factors: KeyFactors) -> list[tuple[str, Any]]:
    """(dotted path, leaf value) pairs in sorted order, for printing a key's factors."""
    out: list[tuple[str, Any]] = []
    _flatten(normalize_factors(factors), "", out)
    return out


def installed_versions(packages: tuple[str, ...] = TOOL_PACKAGES) -> dict[str, str]:
    """Installed distribution versions, read from package metadata (imports nothing heavy).

    A package that is not installed reads "absent", which is itself a key factor.
    """
    from importlib import metadata  # ~20 ms; only compiles need it

    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _plain(value: Any, path: str) -> Any:
    """Check one value is JSON-shaped and return a copy; the error names the bad path."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"key factor {path} = {value!r}: use a finite number or a string")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"key factor {path} has a non-str key {k!r}: use str keys")
            out[k] = _plain(v, f"{path}.{k}")
        return out
    raise TypeError(
        f"key factor {path} is a {type(value).__name__}: convert it to str, number, list or dict"
    )


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _diff(a: Any, b: Any, path: str, out: list) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for name in sorted(set(a) | set(b)):
            _diff(a.get(name, MISSING), b.get(name, MISSING), _join(path, name), out)
    elif not _same(a, b):
        out.append((path, a, b))


def _same(a: Any, b: Any) -> bool:
    """Equal as hashed: 1, 1.0 and True are equal in Python but spell differently in JSON."""
    if a is MISSING or b is MISSING:
        return a is b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _flatten(value: Any, path: str, out: list) -> None:
    if isinstance(value, dict) and value:
        for name in sorted(value):
            _flatten(value[name], _join(path, name), out)
    else:
        out.append((path, value))
