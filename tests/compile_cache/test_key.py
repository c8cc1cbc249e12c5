"""Cache keys: stable under spelling changes, sensitive to every factor, diffs name the path."""

from __future__ import annotations

import copy
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compile_cache import (
    CACHE_FORMAT,
    MISSING,
    canonical_json,
    compute_key,
    diff_factors,
    flatten_factors,
    installed_versions,
    normalize_factors,
)


def make_factors(seed: int = 7) -> dict:
    rng = random.Random(seed)
    return {
        "graph_hash": f"{rng.getrandbits(256):064x}",
        "model_config": {"hidden_size": 64 * rng.randint(1, 9), "num_layers": rng.randint(1, 9)},
        "dtype": "bfloat16",
        "quantization": {"scheme": "fp8", "group_size": 128},
        "parallelism": {"tp": 2},
        "passes": [{"name": "FuseAddRMSNorm", "uuid": "a1"}, {"name": "FuseQuant", "uuid": "b2"}],
        "impl": {"rms_norm": "triton", "attention": "native"},
        "target": {"name": "h100", "arch": "sm_90a", "sms": 132},
        "versions": {"torch": "2.13.0", "triton": "3.9.0", "helion": "1.5.1", "kiln": "0.1.0"},
    }


def test_key_is_sha256_hex_and_stable_across_dict_order_and_tuples():
    factors = make_factors()
    shuffled = dict(reversed(list(factors.items())))
    shuffled["passes"] = tuple(shuffled["passes"])
    key = compute_key(factors)
    assert len(key) == 64 and int(key, 16) >= 0
    assert compute_key(shuffled) == key
    assert compute_key(copy.deepcopy(factors)) == key


def test_key_golden_value_pins_the_canonical_form():
    """Changing the canonical JSON silently would orphan every cache entry: bump CACHE_FORMAT."""
    factors = {"dtype": "bfloat16", "passes": ["a", "b"], "versions": {"torch": "2.13.0"}}
    assert CACHE_FORMAT == 1
    canonical = (
        '{"cache_format":1,"dtype":"bfloat16","passes":["a","b"],"versions":{"torch":"2.13.0"}}'
    )
    assert canonical_json(factors) == canonical
    assert (
        compute_key(factors) == "be32979e55e98ec1fc3d5b5f5d89d8e738efab20035fba7d019d86a7ca4f1532"
    )


def _set(factors: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        factors = factors[name]
    factors[leaf] = value


MUTATIONS = [
    ("passes", [{"name": "FuseAddRMSNorm", "uuid": "a1"}]),  # a pass toggled off
    ("dtype", "float16"),
    ("quantization.scheme", "int8"),
    ("quantization", None),
    ("target.name", "b200"),
    ("target.arch", "sm_100a"),
    ("versions.torch", "2.11.0"),
    ("versions.triton", "3.6.0"),
    ("versions.helion", "1.5.0"),
    ("graph_hash", "f" * 64),
    ("model_config.num_layers", 99),
    ("parallelism.tp", 4),
    ("impl.rms_norm", "helion"),
    ("cache_format", CACHE_FORMAT + 1),
]


@pytest.mark.parametrize(("path", "value"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_changing_one_factor_changes_the_key_and_the_diff_names_it(path, value):
    base = make_factors()
    changed = copy.deepcopy(base)
    _set(changed, path, value)
    assert compute_key(changed) != compute_key(base)
    diffs = diff_factors(base, changed)
    assert [d[0] for d in diffs] == [path]
    assert diffs[0][2] == value


def test_diff_reports_missing_factors_and_number_spelling():
    a = {"x": 1, "nested": {"y": [1, 2]}}
    b = {"x": 1.0, "nested": {"z": True}}
    diffs = {path: (va, vb) for path, va, vb in diff_factors(a, b)}
    assert diffs == {
        "x": (1, 1.0),  # equal in Python, but hashed differently
        "nested.y": ([1, 2], MISSING),
        "nested.z": (MISSING, True),
    }
    assert compute_key(a) != compute_key(b)


def test_cache_format_is_filled_in_and_hashed():
    factors = {"dtype": "float32"}
    assert normalize_factors(factors)["cache_format"] == CACHE_FORMAT
    assert compute_key(factors) == compute_key({**factors, "cache_format": CACHE_FORMAT})
    assert "cache_format" not in factors  # the caller's dict is not modified


@pytest.mark.parametrize(
    ("factors", "message"),
    [
        ({"dtype": {1, 2}}, "factors.dtype is a set"),
        ({"x": {"y": math.nan}}, "factors.x.y"),
        ({"passes": [{3: "a"}]}, "non-str key 3"),
        ({"t": object()}, "factors.t is a object"),
    ],
)
def test_non_json_factors_are_rejected_naming_the_path(factors, message):
    with pytest.raises((TypeError, ValueError), match=message.replace(".", r"\.")):
        compute_key(factors)


def test_flatten_lists_leaf_paths_sorted():
    flat = dict(flatten_factors({"versions": {"torch": "2", "triton": "3"}, "dtype": "f"}))
    assert list(flat) == ["cache_format", "dtype", "versions.torch", "versions.triton"]


def test_installed_versions_reads_metadata_without_importing_torch():
    versions = installed_versions(("diskcache", "no-such-package-kiln"))
    assert versions["diskcache"][0].isdigit()
    assert versions["no-such-package-kiln"] == "absent"


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=6), json_value, min_size=1, max_size=6))
def test_key_ignores_insertion_order_and_self_diff_is_empty(factors):
    reordered = dict(reversed(list(factors.items())))
    assert compute_key(reordered) == compute_key(factors)
    assert diff_factors(factors, reordered) == []
