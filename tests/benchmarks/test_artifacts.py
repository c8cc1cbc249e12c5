"""benchmarks/artifacts.py: a benchmark compiles the engine's options under the lowering it
asks for and runs that artifact by path."""

from __future__ import annotations

import types
from pathlib import Path

from benchmarks import artifacts
from kiln.config import EngineConfig


def test_compile_variant_compiles_the_engine_options_under_the_lowering_asked(monkeypatch):
    import lowering.compile

    seen = []

    def compile_model(options, progress=None):
        seen.append(options)
        return types.SimpleNamespace(artifact=types.SimpleNamespace(path=Path("/art/x")))

    monkeypatch.setattr(lowering.compile, "compile_model", compile_model)
    config = EngineConfig(model="demo", passes="-fuse_add_rms_norm", max_num_batched_tokens=256)
    _, artifact = artifacts.compile_variant(config, "plan")
    (options,) = seen
    assert (options.lowering, options.passes, options.max_num_tokens) == (
        "plan",
        "-fuse_add_rms_norm",
        256,
    )
    run = artifacts.running(config, artifact)
    assert run.artifact == "/art/x" and run.passes == config.passes
