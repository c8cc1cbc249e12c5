"""Sizes as people write them."""

from __future__ import annotations

import pytest

from compile_cache import format_size, parse_size
from kiln.errors import KilnError


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("123", 123),
        ("500M", 500 << 20),
        ("2G", 2 << 30),
        ("2g", 2 << 30),
        ("1.5G", 3 << 29),
        ("64K", 64 << 10),
        ("10MB", 10 << 20),
        ("3GiB", 3 << 30),
        ("1T", 1 << 40),
        ("0", 0),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "-5M", "5X", "1.2.3G", "G"])
def test_bad_sizes_say_what_to_write(text):
    with pytest.raises(KilnError, match=r"bad size .*e\.g\. 500M, 2G"):
        parse_size(text)


@pytest.mark.parametrize(
    ("size", "text"), [(812, "812B"), (4096, "4.0K"), (3 << 19, "1.5M"), (5 << 30, "5.0G")]
)
def test_format_size(size, text):
    assert format_size(size) == text
