"""Benchmarks behind `kiln bench`: throughput/latency against a baseline, and startup phases.

Each module measures one thing and returns plain rows; `kiln/commands/bench.py` prints them and
turns them into a `perf_dashboard.records.BenchRecord`. Heavy imports (torch, transformers) stay
inside functions, so importing this package is cheap.
"""
