"""Benchmark scripts for a GPU host (and a few CPU measurements), with their recorded results.

`kiln bench` itself measures through `kiln/benchmarking/`; the scripts here build random-weight
checkpoints of real model shapes and drive the CLI or the engine on them, each writing JSON
(`results/` holds what they measured). Heavy imports (torch, transformers) stay inside
functions, so importing this package is cheap.
"""
