"""`compile_model`: checkpoint -> captured graph -> passes -> lowering -> cached artifact.

Phases (each timed into the compile record): load, capture+passes, lower, cache write.
Lowering takes one of two paths (docs/architecture.md):
- native (the CPU, or the GPU of the target itself): AOTInductor compiles the post-pass graph
  (weights as inputs, step sizes dynamic) to a `.pt2` package that a warm start loads through
  the C++ loader;
- cross GPU (the host lacks the target): every non-GEMM IR op in the graph gets its Triton
  kernel compiled for the target's arch; GEMMs stay library calls.
Weights stay in the checkpoint: the artifact names each graph weight by the model parameter it
is, and stores only weights a pass derived (fp8-quantized, padded) in `derived.safetensors`.
"""

from __future__ import annotations

import json
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from compile_cache.formats import ARTIFACT_FORMAT
from kiln import env
from kiln.config import EngineConfig, resolve_dtype
from kiln.errors import KilnError
from kiln.timing import timed


@dataclass(frozen=True)
class CompileOptions:
    """What a compile depends on besides the checkpoint; defaults are the engine's."""

    model: str = EngineConfig.model
    target: str = EngineConfig.target
    dtype: str = EngineConfig.dtype
    quantization: str | None = EngineConfig.quantization
    tensor_parallel_size: int = EngineConfig.tensor_parallel_size
    passes: str | None = EngineConfig.passes  # toggles text; None = default pipeline
    # The largest step (token budget) the graph is built for.
    max_num_tokens: int = EngineConfig.max_num_batched_tokens

    def lookup_options(self) -> dict:
        d = asdict(self)
        d.pop("model")
        d.pop("target")
        d["gpu_lowering"] = env.gpu_lowering()  # shapes GPU artifacts
        return d


@dataclass
class CompileResult:
    artifact: object  # compile_cache.Artifact
    built: bool
    key: str
    record: dict  # compile record (perf_dashboard CompileRecord fields)


def lookup_key(options: CompileOptions, path: Path, target) -> tuple[str, dict]:
    from compile_cache import compute_key
    from lowering.lookup import lookup_factors

    factors = lookup_factors(path, options.lookup_options(), json.loads(target.to_json()))
    return compute_key(factors), factors


def compile_model(options: CompileOptions, store=None, progress=print) -> CompileResult:
    from compile_cache import Store
    from ir.targets import get_target
    from model_defs.registry import resolve_model_path

    store = store or Store()
    target = get_target(options.target)
    path = resolve_model_path(options.model)
    lkey, lfactors = lookup_key(options, path, target)
    phases: dict[str, float] = {}
    _explain_miss(store, lkey, lfactors, progress)
    t0 = time.perf_counter()
    art, built = store.get_or_build(
        lkey, lfactors, lambda d: _build(d, options, path, target, phases, progress)
    )
    total = time.perf_counter() - t0
    if not built:
        phases = {"cache_lookup": total}
    man = art.manifest
    record = {
        "model": options.model,
        "target": target.name,
        "key": art.key,
        "cold": built,
        "phases": phases,
        "passes": man.get("passes", []),
        "kernels": man.get("kernels", {}),
        "artifact_bytes": art.size,
        "versions": lfactors["versions"],
        "host": socket.gethostname(),
        "created": time.time(),
    }
    return CompileResult(art, built, art.key, record)


def _explain_miss(store, key: str, factors: dict, progress) -> None:
    """On a miss, name the factors that separate this compile from the closest cached one."""
    if key in store.keys():
        return
    closest = store.closest(factors)
    if closest is None:
        progress("[kiln compile] cache miss (the cache is empty)")
        return
    other, diffs = closest
    paths = ", ".join(path for path, _, _ in diffs[:6]) or "nothing (a partial entry)"
    progress(f"[kiln compile] cache miss; closest entry {other[:12]} differs in: {paths}")


@contextmanager
def _phase(phases: dict, name: str, progress):
    """Time one compile phase into `phases`, announcing its start and end."""
    progress(f"[kiln compile] {name} ...")
    with timed(phases, name):
        yield
    progress(f"[kiln compile] {name} done in {phases[name]:.2f}s")


def _build(staging: Path, options: CompileOptions, path: Path, target, phases, progress) -> dict:
    from lowering.lowered import lower
    from model_defs.loader import load_model
    from model_defs.registry import read_config
    from passes.compile import compile_graph

    dtype = getattr(torch, resolve_dtype(options.dtype, target.device_type))
    _, cfg = read_config(path)
    with _phase(phases, "load", progress):
        from model_defs.decoder import ParallelConfig

        on_gpu = target.is_cuda and torch.cuda.is_available()
        # Every rank runs the same graph; rank 0's shards stand in for the rest.
        par = ParallelConfig(options.tensor_parallel_size, 0)
        model = load_model(path, dtype, "cuda" if on_gpu else "cpu", par)
    with _phase(phases, "capture+passes", progress):
        pcfg = pass_config(options.passes, options.quantization)
        passed, trace = compile_graph(model, pcfg, max_num_tokens=options.max_num_tokens)
    with _phase(phases, "lower", progress):
        lowered = lower(passed, model, target, staging, options)
    graph_factors = {
        "graph_hash": trace.graph_hash,
        "pass_uuids": [p.uuid for p in trace.passes if p.enabled],
        "impls": lowered["impls"],
    }
    return {
        "format": ARTIFACT_FORMAT,
        "model": options.model,
        "model_config": asdict(cfg),
        "target": json.loads(target.to_json()),
        "dtype": str(dtype).removeprefix("torch."),
        "graph": graph_factors,
        "passes": [
            {
                "name": p.name,
                "seconds": p.wall_s,
                "rewrites": p.rewrites,
                "nodes_before": p.nodes_before,
                "nodes_after": p.nodes_after,
            }
            for p in trace.passes
            if p.enabled
        ],
        "missed_fusions": trace.missed,
        "pass_interactions": trace.interactions,
        "token_buckets": list(passed.token_buckets),
        "compile_phases": dict(phases),
        **lowered["manifest"],
    }


def pass_config(passes: str | None, quantization: str | None):
    from passes.config import PassConfig
    from passes.pipeline import parse_toggles

    try:
        return PassConfig(quantization=quantization or "none", toggles=parse_toggles(passes))
    except ValueError as e:
        raise KilnError(str(e)) from None
