"""`compile_model`: checkpoint -> captured graph -> passes -> lowering -> cached artifact.

Phases (each timed into the compile record): load, capture+passes, lower, cache write.
Lowering takes one of two paths (docs/architecture.md):
- native (the CPU, or the GPU of the target itself): AOTInductor compiles the post-pass graph
  (weights as inputs, step sizes dynamic) to `.pt2` packages that a warm start loads through
  the C++ loader: one per distinct decoder-layer piece (`--lowering piecewise`, the default;
  lowering/piecewise.py) or one for the whole graph (`monolithic`); `KILN_GPU_LOWERING=jit`
  keeps the exported program for `torch.compile` instead;
- plan (a GPU target the host lacks, or `--lowering plan`): the post-pass graph as an execution
  plan, every kernel it launches compiled to a cubin for the target's arch at the model's
  shapes; GEMMs stay library calls (lowering/plan_artifact.py).
Weights stay in the checkpoint: the artifact names each graph weight by the model parameter it
is, and stores only weights a pass derived (fp8-quantized, padded) in `derived.safetensors`.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from compile_cache.formats import ARTIFACT_FORMAT
from ir.host_triton import check_not_host_only
from kiln import env
from kiln.config import EngineConfig, resolve_dtype
from kiln.errors import KilnError

LOWERINGS = ("auto", "piecewise", "monolithic", "plan")


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
    # auto: plan for a GPU target, piecewise for the CPU; piecewise: each distinct decoder layer
    # compiled once through AOTInductor; monolithic: the whole graph in one; plan: cubins + plan
    lowering: str = "auto"

    def __post_init__(self) -> None:
        if self.lowering not in LOWERINGS:
            raise KilnError(
                f"lowering={self.lowering!r} is not known; use one of {', '.join(LOWERINGS)}"
            )

    def lowering_for(self, target) -> str:
        """The lowering that runs: "plan" for a GPU target this host lacks, whatever was
        asked (so a plan built on a CPU box and a native build on the GPU never share a key);
        "auto" resolved."""
        from lowering.lowered import plan_lowering

        if plan_lowering(self, target):
            return "plan"
        return "piecewise" if self.lowering == "auto" else self.lowering

    def lookup_options(self, target) -> dict:
        """The options as key factors: dtype resolved for the target, GPU lowering mode."""
        return {
            "dtype": resolve_dtype(self.dtype, target.device_type),
            "quantization": self.quantization or "none",
            "tensor_parallel_size": self.tensor_parallel_size,
            "passes": self.passes or "default",
            "max_num_tokens": self.max_num_tokens,
            "lowering": self.lowering_for(target),
            "gpu_lowering": env.gpu_lowering() if target.device_type == "cuda" else "none",
        }


@dataclass
class CompileResult:
    artifact: object  # compile_cache.Artifact
    built: bool
    key: str
    record: dict  # compile record (perf_dashboard CompileRecord fields)


def lookup_key(options: CompileOptions, path: Path, target, store=None) -> tuple[str, dict]:
    """(pre-key, its factors): what a start computes without capturing (lowering/lookup.py)."""
    from compile_cache import Store, compute_key
    from lowering.lookup import pre_factors

    store = store or Store()
    target_json = json.loads(target.to_json())
    factors = pre_factors(path, options.lookup_options(target), target_json, store.memo_dir)
    return compute_key(factors), factors


def find_artifact(options: CompileOptions, path: Path, target, store=None):
    """The cached artifact for these options and checkpoint, or None; never captures."""
    from compile_cache import Store
    from lowering.lookup import find_artifact as follow

    store = store or Store()
    pre_key, _ = lookup_key(options, path, target, store)
    return follow(store, pre_key, path)


def compile_model(options: CompileOptions, store=None, progress=print) -> CompileResult:
    """The artifact for `options`: found through the pre-key alias, found under the content
    key after a capture, or built. `progress`: a message callable or a CompileProgress."""
    from compile_cache import Store
    from ir.targets import get_target
    from lowering.lookup import find_artifact as follow
    from lowering.progress import as_progress
    from model_defs.registry import resolve_model_path

    progress = as_progress(progress)
    store = store or Store()
    target = get_target(options.target)
    path = resolve_model_path(options.model)
    t0 = time.perf_counter()
    pre_key, pre = lookup_key(options, path, target, store)
    art = follow(store, pre_key, path)
    phases: dict[str, float] = {"cache_lookup": time.perf_counter() - t0}
    built = False
    if art is None:
        check_not_host_only(f"compiling {options.model} (a cache miss)")
        art, built = _capture_then_build(
            options, path, target, store, pre_key, pre, phases, progress
        )
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
        "versions": pre["versions"],
        "host": socket.gethostname(),
        "created": time.time(),
    }
    return CompileResult(art, built, art.key, record)


def _capture_then_build(options, path, target, store, pre_key, pre, phases, progress):
    """Capture and run the passes (the content key needs the graph), then find or build the
    artifact under the content key and file the pre-key as its alias. What the lowering
    starts ahead (`head_start`) runs beside the capture."""
    from compile_cache import compute_key
    from lowering.lookup import content_factors, weights_alias, weights_hash
    from lowering.lowered import head_start

    with head_start(options, target) as ahead:
        model, passed, trace = _capture(options, path, target, phases, progress)
        impls = choose_impls(passed.gm, target)
        graph = {
            "graph_hash": trace.graph_hash,
            "passes": [{"name": p.name, "uuid": p.uuid} for p in trace.passes if p.enabled],
            "impls": impls,
        }
        embeds = embedded_weights(passed, model)
        weights = weights_hash(path, store.memo_dir) if embeds else None
        factors = content_factors(pre, graph, weights)
        key = compute_key(factors)
        _explain_miss(store, key, factors, progress)
        captured = (model, passed, trace, ahead)
        art, built = store.get_or_build(
            key, factors, lambda d: _build(d, options, target, captured, phases, progress)
        )
    store.set_alias(pre_key, key, weights=bool(embeds))
    if embeds:
        store.set_alias(weights_alias(pre_key, weights), key)
    return art, built


def choose_impls(gm, target) -> dict[str, str]:
    """The implementation the dispatch table picks for each IR op in the graph."""
    import ir.kernels  # noqa: F401  (registers kernel implementations)
    from lowering.lowered import ir_ops_in
    from lowering.op_table import runnable_impls

    return runnable_impls(ir_ops_in(gm), target)[0]


def embedded_weights(passed, model) -> list[str]:
    """Graph tensors derived from the checkpoint's weights (quantized, padded): the artifact
    stores them, so it depends on the weights' content. Buffers (the rotary table) come from
    the config alone and parameters are read from the checkpoint at load."""
    own = {id(t) for t in model.parameters()} | {id(t) for t in model.buffers()}
    tensors = {**passed.weights, "__lm_head__": passed.lm_head}
    return sorted(name for name, t in tensors.items() if id(t) not in own)


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


def _capture(options: CompileOptions, path: Path, target, phases, progress):
    """The model, its post-pass graph and the trace. The capture needs the weights' shapes,
    not their values: the checkpoint is only read when a pass derives tensors from it that the
    artifact stores (fp8 quantization; padding, found after a first capture), else the model's
    parameters are uninitialised and the checkpoint's headers are checked instead."""
    from passes.compile import compile_graph

    pcfg = pass_config(options.passes, options.quantization)
    read = options.quantization is not None  # quantized weights are always stored
    model = _timed_load(options, path, target, phases, progress, read)
    with progress.phase("capture+passes", phases):
        passed, trace = compile_graph(model, pcfg, max_num_tokens=options.max_num_tokens)
    if not read and embedded_weights(passed, model):
        first = phases["capture+passes"]
        model = _timed_load(options, path, target, phases, progress, True)
        with progress.phase("capture+passes", phases):
            passed, trace = compile_graph(model, pcfg, max_num_tokens=options.max_num_tokens)
        phases["capture+passes"] += first
    return model, passed, trace


def _timed_load(options: CompileOptions, path: Path, target, phases, progress, read: bool):
    """The decoder for the capture, its time added to phase `load`: the checkpoint read when
    `read`, else uninitialised parameters of the checkpoint's shapes (its headers checked).

    Nothing writes those parameters: export and the passes see their shapes through fake
    tensors, a plan records on meta copies, and what the piecewise lowering runs eagerly only
    serves as example inputs. On the CPU their pages are never backed, so an 8B shape's 16 GB
    costs neither time nor memory (writing them takes 16-29 s on the 2-core CPU machine)."""
    from model_defs.decoder import ParallelConfig
    from model_defs.loader import build_model, load_model
    from model_defs.registry import read_config
    from model_defs.weight_plan import PlanUnsupported, plan_weights

    dtype = getattr(torch, resolve_dtype(options.dtype, target.device_type))
    device = "cuda" if target.is_cuda and torch.cuda.is_available() else "cpu"
    # Every rank runs the same graph; rank 0's shards stand in for the rest.
    par = ParallelConfig(options.tensor_parallel_size, 0)
    before = phases.get("load", 0.0)
    with progress.phase("load", phases):
        if read:
            model = load_model(path, dtype, device, par)
        else:
            family, cfg = read_config(path)
            try:
                plan_weights(path, family, cfg)  # names, shapes, dtypes, sizes: a bad one fails now
            except PlanUnsupported:
                pass  # a valid checkpoint the runtime's plain loader reads
            model = build_model(cfg, dtype, device, par)
    phases["load"] += before
    return model


def _build(staging: Path, options, target, captured, phases, progress) -> dict:
    from lowering.lowered import lower

    model, passed, trace, ahead = captured
    with progress.phase("lower", phases):
        lowered = lower(passed, model, target, staging, options, progress, ahead)
    graph_factors = {
        "graph_hash": trace.graph_hash,
        "pass_uuids": [p.uuid for p in trace.passes if p.enabled],
        "impls": lowered["impls"],
    }
    return {
        "format": ARTIFACT_FORMAT,
        "model": options.model,
        "model_config": asdict(model.cfg),
        "target": json.loads(target.to_json()),
        "dtype": resolve_dtype(options.dtype, target.device_type),
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
