"""The benchmarks' way to a compiled artifact under a chosen lowering.

An `EngineConfig` has no lowering: `kiln serve` and `--compile on_miss` look up the default
(piecewise). A benchmark that measures another lowering (`kiln compile --lowering plan`)
compiles with the engine's compile options and that lowering, then runs the artifact by path
(`EngineConfig.artifact`), as `--artifact DIR` does.
"""

from __future__ import annotations

import dataclasses
import gc
import time

LOWERINGS = ("piecewise", "plan")


def compile_variant(config, lowering: str) -> tuple[float, object]:
    """(seconds, artifact) of `config`'s compile options under `lowering`, built on a miss."""
    from kiln.resolve import engine_compile_options
    from lowering.compile import compile_model

    options = dataclasses.replace(engine_compile_options(config), lowering=lowering)
    start = time.perf_counter()
    result = compile_model(options, progress=lambda *a: None)
    seconds = time.perf_counter() - start
    release()  # the compile's copy of the weights, before an engine sizes its KV cache
    return seconds, result.artifact


def running(config, artifact):
    """`config` set to run `artifact` (by path, whatever the cache would look up)."""
    return dataclasses.replace(config, artifact=str(artifact.path))


def release() -> None:
    """Give back the GPU memory of engines and models no longer referenced."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
