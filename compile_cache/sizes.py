"""Byte sizes as people write them (`500M`, `2G`, `1.5GiB`, `123456`), binary units."""

from __future__ import annotations

import re

from kiln.errors import KilnError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in `text`: a plain number, or one with K, M, G or T (powers of 1024)."""
    match = _SIZE.match(str(text))
    if not match:
        raise KilnError(
            f"bad size {text!r}: give bytes or a number with K, M, G or T (e.g. 500M, 2G)"
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


def format_size(size: int) -> str:
    """Short human form: `812B`, `4.0K`, `1.5M`, `2.0G`."""
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{int(value)}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"
