"""What an engine runs, decided above the runtime: the artifact named by `--artifact`, the
cached artifact of this model and these options (compiled first on a miss with
`--compile on_miss`), the passes run eagerly (`--passes`), or the eager reference.

This is the one place that joins the compiler (lookup key, compile, pass pipeline) to the
runtime, which only loads what it is handed.
"""

from __future__ import annotations

from pathlib import Path

from kiln.config import COMPILE_FIELDS, EngineConfig
from kiln.timing import timed
from runtime.engine import Engine
from runtime.loaders import EagerLoader, Loader, loader_for, read_artifact
from runtime.startup import load


def resolve_loader(config: EngineConfig) -> tuple[Loader, dict[str, float]]:
    """(the runtime `Loader` of what runs, phases timed here: lookup, compile)."""
    if config.artifact is not None:
        return loader_for(read_artifact(Path(config.artifact))), {}
    phases: dict[str, float] = {}
    artifact = None if config.compile == "never" else _cached_artifact(config, phases)
    if artifact is not None:
        return loader_for(artifact), phases
    return EagerLoader(_passes_transform(config) if config.passes is not None else None), phases


def build_engine(
    config: EngineConfig, *, defer_graph_capture: bool = False, serving: bool = False
) -> Engine:
    """An `Engine` for `config`, running what `resolve_loader` chose (`defer_graph_capture`,
    `serving`: see `runtime.startup.load`)."""
    loader, phases = resolve_loader(config)
    loaded = load(config, loader, phases, defer_graph_capture=defer_graph_capture, serving=serving)
    return Engine(config, loaded)


def compile_options(model: str, **fields):
    """The compiler's options for `model` from the COMPILE_FIELDS given (others default)."""
    from lowering.compile import CompileOptions

    if "max_num_batched_tokens" in fields:
        fields["max_num_tokens"] = fields.pop("max_num_batched_tokens")
    return CompileOptions(model=model, **fields)


def engine_compile_options(config: EngineConfig):
    """The options the artifact of `config` was (or will be) compiled with."""
    return compile_options(config.model, **{f: getattr(config, f) for f in COMPILE_FIELDS})


def _cached_artifact(config: EngineConfig, phases: dict[str, float]):
    """The cache's artifact for `config`, compiled now on a miss when `compile == "on_miss"`."""
    from compile_cache import Store
    from ir.targets import get_target
    from lowering.compile import compile_model, find_artifact
    from model_defs.registry import resolve_model_path

    store = Store()
    with timed(phases, "manifest"):
        path = resolve_model_path(config.model)
        options, target = engine_compile_options(config), get_target(config.target)
        artifact = find_artifact(options, path, target, store)
    if artifact is None and config.compile == "on_miss":
        with timed(phases, "compile"):
            artifact = compile_model(options, store).artifact
    return artifact


def _passes_transform(config: EngineConfig):
    """model -> its captured graph after the configured passes, run eagerly."""
    from lowering.compile import pass_config

    pcfg = pass_config(config.passes, config.quantization)

    def transform(model):
        from passes.compile import compile_graph

        forward, _ = compile_graph(model, pcfg, max_num_tokens=config.max_num_batched_tokens)
        return forward

    return transform
