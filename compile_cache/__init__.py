"""The content-addressed compile cache: keys, verified artifact folders, locks, eviction.

Cheap to import (no torch): `kiln serve`'s warm start goes through it.
"""

from compile_cache.artifact import Artifact, Problem
from compile_cache.key import (
    CACHE_FORMAT,
    MISSING,
    KeyFactors,
    canonical_json,
    compute_key,
    diff_factors,
    flatten_factors,
    installed_versions,
    normalize_factors,
)
from compile_cache.sizes import format_size, parse_size
from compile_cache.store import Builder, Entry, Store
from compile_cache.tool_caches import (
    configure_bytecode_cache,
    configure_tool_caches,
    default_root,
)

__all__ = [
    "CACHE_FORMAT",
    "MISSING",
    "Artifact",
    "Builder",
    "Entry",
    "KeyFactors",
    "Problem",
    "Store",
    "canonical_json",
    "compute_key",
    "configure_bytecode_cache",
    "configure_tool_caches",
    "default_root",
    "diff_factors",
    "flatten_factors",
    "format_size",
    "installed_versions",
    "normalize_factors",
    "parse_size",
]
