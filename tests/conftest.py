"""Shared fixtures: tiny random HF checkpoints for every family, an isolated Kiln cache."""

from __future__ import annotations

import os

import pytest

# Triton is imported before any test, so no test process can enter host-only mode
# (ir/host_triton.py), even after a test permits it: the kernel modules a later test imports
# would hold stand-ins that Triton's JIT cannot run.
import triton  # noqa: F401


@pytest.fixture(autouse=True, scope="session")
def _isolated_kiln_cache(tmp_path_factory):
    """Keep tests out of the user's cache unless a test sets its own KILN_CACHE_DIR."""
    if "KILN_CACHE_DIR" not in os.environ:
        os.environ["KILN_CACHE_DIR"] = str(tmp_path_factory.mktemp("kiln-cache"))
    yield


@pytest.fixture(autouse=True)
def _collector_restored():
    """An in-process `kiln generate`/`serve` freezes every live object once its engine is built
    (kiln/startup.py): give them back to the collector so no test inherits that."""
    yield
    import gc

    if gc.get_freeze_count():
        gc.unfreeze()
    gc.enable()
