"""Fixtures for the dashboard tests (sample records live in dashboard_samples.py)."""

from __future__ import annotations

import random

import pytest
from dashboard_samples import make_bench, make_compile

from perf_dashboard import DashboardStore


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def store(tmp_path) -> DashboardStore:
    return DashboardStore(tmp_path / "dash.sqlite")


@pytest.fixture
def filled_store(store: DashboardStore, rng: random.Random) -> DashboardStore:
    """A cold and a warm compile of two models, plus two bench runs."""
    t0 = 1_790_000_000.0
    for n, model in enumerate(("demo", "llama-3-8b-shape")):
        store.add_compile(make_compile(rng, cold=True, created=t0 + 100 * n, model=model))
        store.add_compile(make_compile(rng, cold=False, created=t0 + 100 * n + 50, model=model))
    store.add_bench(make_bench(rng, created=t0 + 500))
    store.add_bench(make_bench(rng, created=t0 + 600))
    return store
