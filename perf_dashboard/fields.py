"""Strict field checks for dashboard records.

Records arrive from other machines (`kiln bench --record FILE`), so every value is checked and
an error names the exact field (`passes[2].seconds`) and what was expected, instead of a
half-broken row surfacing later as a crash while drawing a chart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from kiln.errors import KilnError


class RecordError(KilnError):
    """A record field holds a bad value; `field` is the dotted path to it."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"field '{field}' {problem}")

    def under(self, prefix: str) -> RecordError:
        """The same error seen from the enclosing object (`seconds` -> `passes[2].seconds`)."""
        joined = f"{prefix}{self.field}" if self.field.startswith("[") else f"{prefix}.{self.field}"
        return RecordError(joined, self.problem)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_str(value: Any, field: str, *, nullable: bool = False) -> str | None:
    """A non-empty string (or None when `nullable`)."""
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        expected = "a non-empty string or null" if nullable else "a non-empty string"
        raise RecordError(field, f"must be {expected}, got {_show(value)}")
    return value


def check_bool(value: Any, field: str) -> bool:
    """A real JSON boolean: 0/1 or "true" are rejected so a typo can't flip cold/warm."""
    if not isinstance(value, bool):
        raise RecordError(field, f"must be true or false, got {_show(value)}")
    return value


def check_int(value: Any, field: str, *, minimum: int = 0) -> int:
    """An integer >= `minimum` (booleans are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecordError(field, f"must be an integer >= {minimum}, got {_show(value)}")
    return value


def check_number(
    value: Any, field: str, *, minimum: float = 0.0, nullable: bool = False
) -> float | None:
    """A finite number >= `minimum`, returned as float (None allowed when `nullable`)."""
    if value is None and nullable:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < minimum:
        suffix = " or null" if nullable else ""
        raise RecordError(
            field, f"must be a finite number >= {minimum:g}{suffix}, got {_show(value)}"
        )
    return float(value)


def check_mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RecordError(field, f"must be an object, got {_show(value)}")
    for key in value:
        if not isinstance(key, str) or not key:
            raise RecordError(field, f"must have non-empty string keys, got key {_show(key)}")
    return value


def check_seconds_map(value: Any, field: str, *, non_empty: bool = False) -> dict[str, float]:
    """Name -> seconds, order kept (it is the order phases ran in)."""
    mapping = check_mapping(value, field)
    if non_empty and not mapping:
        raise RecordError(field, "must hold at least one entry")
    return {k: check_number(v, f"{field}.{k}") for k, v in mapping.items()}


def check_count_map(value: Any, field: str) -> dict[str, int]:
    mapping = check_mapping(value, field)
    return {k: check_int(v, f"{field}.{k}") for k, v in mapping.items()}


def check_str_map(value: Any, field: str) -> dict[str, str]:
    mapping = check_mapping(value, field)
    return {k: check_str(v, f"{field}.{k}") for k, v in mapping.items()}


def check_list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise RecordError(field, f"must be a list, got {_show(value)}")
    return list(value)


def check_keys(data: Any, where: str, required: Iterable[str], optional: Iterable[str]) -> None:
    """Every required key present and no unknown key (an unknown key is usually a typo)."""
    if not isinstance(data, Mapping):
        raise RecordError(where or "record", f"must be an object, got {_show(data)}")
    required, optional = list(required), list(optional)
    for name in required:
        if name not in data:
            raise RecordError(_join(where, name), "is missing")
    known = set(required) | set(optional)
    for name in data:
        if name not in known:
            allowed = ", ".join(sorted(known))
            raise RecordError(_join(where, str(name)), f"is not a known field (known: {allowed})")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
