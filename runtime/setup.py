"""Engine start-up: resolve the model, load weights, size and allocate the KV cache.

Each phase is timed into `LoadedModel.phases` so `kiln bench startup` can report where the
time to first token goes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kiln.config import EngineConfig
from kiln.errors import KilnError
from model_defs.config import ModelConfig
from runtime.blas_warmup import BlasWarmup
from runtime.kv_cache import allocate_kv_caches, bytes_per_block, num_blocks_for_budget
from runtime.model_runner import ModelRunner, StepSeq
from scheduler.scheduler import SchedulerConfig


@dataclass
class LoadedModel:
    name: str
    path: Path
    cfg: ModelConfig
    tokenizer: object
    runner: ModelRunner
    scheduler_config: SchedulerConfig
    max_model_len: int
    eos_token_ids: tuple[int, ...]
    vocab_size: int
    device: torch.device
    dtype: torch.dtype
    phases: dict[str, float] = field(default_factory=dict)
    compile_seconds: float = 0.0
    artifact_key: str | None = None  # the compiled artifact running, None = eager
    activation_peak_bytes: int = 0  # GPU: from the warm-up step (or kept by an earlier load)

    def describe(self) -> str:
        if self.artifact_key:
            return f"running compiled artifact {self.artifact_key[:12]} from the cache"
        return "running the eager reference (no compiled artifact; `kiln compile` builds one)"

    @property
    def load_seconds(self) -> float:
        return sum(v for k, v in self.phases.items() if k != "compile")


@contextmanager
def _timed(phases: dict[str, float], name: str):
    t0 = time.perf_counter()
    yield
    phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0


def pick_device(config: EngineConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise KilnError(f"device={config.device!r} was asked for, but no CUDA GPU is available")
    return torch.device(config.device)


def pick_dtype(config: EngineConfig, device: torch.device) -> torch.dtype:
    if config.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, config.dtype)


def load(config: EngineConfig, forward_factory: Callable | None = None) -> LoadedModel:
    """Load `config.model` for eager (reference) execution, or through `forward_factory`
    (model, config) -> forward callable when a compiled graph or artifact runs instead."""
    from model_defs.loader import load_model
    from model_defs.registry import read_config, resolve_model_path

    phases: dict[str, float] = {}
    path = resolve_model_path(config.model)
    device = pick_device(config)
    dtype = pick_dtype(config, device)
    blas = BlasWarmup(device, dtype)  # joined before the first forward
    _, cfg = read_config(path)
    with _timed(phases, "tokenizer"):
        tokenizer = load_tokenizer(path)
    with _timed(phases, "weights"):
        model = load_model(path, dtype, device)
    forward = model
    if forward_factory is None:
        forward_factory = _default_forward_factory(config, path)
    if forward_factory is not None:
        with _timed(phases, "compile"):
            forward = forward_factory(model, config, phases)
        # Report artifact loading by its own phases, not again inside "compile".
        inner = sum(phases.get(k, 0.0) for k in ("manifest", "weights_bind", "kernels"))
        phases["compile"] = max(phases["compile"] - inner, 0.0)
        if phases["compile"] < 0.005:
            del phases["compile"]
    if device.type == "cuda":
        from runtime.artifact import ArtifactForward
        from runtime.piecewise import PiecewiseForward

        if not isinstance(forward, (ArtifactForward, PiecewiseForward)):
            _bind_cuda_kernels()  # an artifact binds what its package calls itself
    max_len = config.max_model_len or cfg.max_position_embeddings
    if max_len > cfg.max_position_embeddings:
        raise KilnError(
            f"max_model_len={max_len} exceeds the model's max_position_embeddings="
            f"{cfg.max_position_embeddings}"
        )
    logits_fn = getattr(forward, "compute_logits", model.compute_logits)
    if blas.thread is not None:
        phases["blas_wait"] = blas.join()  # what the side thread's GEMM still cost the load
    with _timed(phases, "warmup"):
        peak = _activation_peak(forward, logits_fn, config, cfg, dtype, device, max_len)
    with _timed(phases, "kv_alloc"):
        num_blocks = _num_kv_blocks(config, cfg, dtype, device, max_len, peak)
        kv = allocate_kv_caches(cfg, num_blocks, config.block_size, dtype, device)
    runner = ModelRunner(forward, logits_fn, kv, config.block_size, device)
    if device.type == "cuda" and not config.enforce_eager:
        from runtime.cuda_graphs import CUDAGraphConfig, CUDAGraphRunner

        gcfg = CUDAGraphConfig(config.max_num_seqs, -(-max_len // config.block_size))
        runner.graphs = CUDAGraphRunner(
            forward, logits_fn, kv, gcfg, device, attention_provider="triton",
            warm_every_bucket=getattr(forward, "compiles_per_shape", True),
        )  # fmt: skip
        with _timed(phases, "graph_capture"):
            runner.graphs.capture()
    sched = SchedulerConfig(
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        block_size=config.block_size,
        num_blocks=num_blocks,
        enable_prefix_caching=config.enable_prefix_caching,
        max_model_len=max_len,
    )
    return LoadedModel(
        name="demo" if config.model == "demo" else path.name,
        path=path,
        cfg=cfg,
        tokenizer=tokenizer,
        runner=runner,
        scheduler_config=sched,
        max_model_len=max_len,
        eos_token_ids=_eos_ids(path, cfg, tokenizer),
        vocab_size=cfg.vocab_size,
        device=device,
        dtype=dtype,
        phases=phases,
        compile_seconds=phases.get("compile", 0.0),
        artifact_key=getattr(forward, "key", None),
        activation_peak_bytes=peak,
    )


def _bind_cuda_kernels() -> None:
    """Eager CUDA calls of IR ops use their Triton kernels (attention) where one is chosen."""
    from ir.kernels import attention  # noqa: F401  (plain Triton; registers its impl)
    from ir.registry import bind_device_impls
    from ir.targets import get_target

    bind_device_impls(get_target("auto"), providers=("triton",))


def _default_forward_factory(config: EngineConfig, path: Path) -> Callable | None:
    """The compiled artifact (cached or built now), or the passes run eagerly, or None."""
    if config.artifact is not None:
        return lambda model, cfg, phases: _artifact_forward(config, path, model, phases)
    if config.compile == "never":
        return _passes_forward if config.passes is not None else None
    return lambda model, cfg, phases: (
        _artifact_forward(config, path, model, phases)
        or (_passes_forward(model, cfg, phases) if config.passes is not None else model)
    )


def _passes_forward(model, config: EngineConfig, phases):
    from lowering.compile import pass_config
    from passes.compile import compile_graph

    forward, _ = compile_graph(
        model,
        pass_config(config.passes, config.quantization),
        max_num_tokens=config.max_num_batched_tokens,
    )
    return forward


def compile_options(config: EngineConfig):
    from lowering.compile import CompileOptions

    return CompileOptions(
        model=config.model,
        target=config.target,
        dtype=config.dtype,
        quantization=config.quantization,
        tensor_parallel_size=config.tensor_parallel_size,
        passes=config.passes,
        max_num_tokens=config.max_num_batched_tokens,
    )


def _artifact_forward(config: EngineConfig, path: Path, model, phases):
    from compile_cache import Store
    from ir.targets import get_target
    from lowering.compile import find_artifact, host_check
    from runtime.artifact import load_artifact_forward

    store = Store()
    if config.artifact is not None:
        import json as _json

        from compile_cache.artifact import Artifact

        folder = Path(config.artifact)
        if not (folder / "manifest.json").is_file():
            raise KilnError(f"{folder} is not a Kiln artifact (no manifest.json)")
        man = _json.loads((folder / "manifest.json").read_text())
        art = Artifact(man["key"], folder, man)
    else:
        target = get_target(config.target)
        t0 = time.perf_counter()
        art = find_artifact(compile_options(config), path, target, store)
        phases["manifest"] = time.perf_counter() - t0
        if art is None and config.compile == "on_miss":
            from lowering.compile import compile_model

            art = compile_model(compile_options(config), store).artifact
    if art is None:
        return None
    host_check(art.manifest)
    return load_artifact_forward(art, model, phases)


def _activation_peak(forward, logits_fn, config, cfg, dtype, device, max_len) -> int:
    """GPU: the activation bytes a step at the token budget needs on top of the weights, 0 on
    CPU. A compiled artifact's is measured by its first load on each kind of GPU and kept with
    its cache entry (its key pins the graph, dtype and versions), so later starts skip the
    warm-up step; the eager forward is measured every time."""
    if device.type != "cuda":
        return 0
    t = min(config.max_num_batched_tokens, max_len)
    key = getattr(forward, "key", None)
    if key is None:
        return _measure_activation_peak(forward, logits_fn, config, cfg, dtype, device, t)
    from compile_cache import Store

    store = Store()
    name = (
        f"activation_peak/{torch.cuda.get_device_name(device)}/tokens={t}"
        f"/seqs={config.max_num_seqs}/block={config.block_size}"
    )
    kept = store.measurement(key, name)
    if isinstance(kept, int) and not isinstance(kept, bool) and kept >= 0:
        return kept
    peak = _measure_activation_peak(forward, logits_fn, config, cfg, dtype, device, t)
    store.record_measurement(key, name, peak)
    return peak


def _measure_activation_peak(forward, logits_fn, config, cfg, dtype, device, t: int) -> int:
    """Run one warm-up step of `t` tokens (one prefill, then logits for max_num_seqs rows) on
    a scratch KV cache and return its peak activation bytes."""
    blocks = -(-t // config.block_size)
    scratch = allocate_kv_caches(cfg, blocks, config.block_size, dtype, device)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    runner = ModelRunner(forward, logits_fn, scratch, config.block_size, device)
    step = [StepSeq([0] * t, 0, list(range(blocks)), True)]
    with torch.inference_mode():
        runner.execute(step)
        hidden = torch.zeros(config.max_num_seqs, cfg.hidden_size, dtype=dtype, device=device)
        logits_fn(hidden)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del scratch, runner, hidden
    torch.cuda.empty_cache()
    return int(peak)


def _num_kv_blocks(
    config: EngineConfig, cfg: ModelConfig, dtype, device, max_len: int, activation_peak: int = 0
) -> int:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        used_elsewhere = total - free
        budget = int(total * config.gpu_memory_utilization) - used_elsewhere
        budget -= int(activation_peak * 1.2) + 256 * 2**20  # measured peak + allocator slack
        if budget <= 0:
            raise KilnError(
                f"no GPU memory left for the KV cache: {used_elsewhere / 2**30:.1f} GiB of "
                f"{total / 2**30:.1f} GiB are in use and gpu_memory_utilization="
                f"{config.gpu_memory_utilization}; raise it or free the GPU"
            )
    else:
        budget = config.kv_cache_memory
    blocks = num_blocks_for_budget(cfg, config.block_size, dtype, budget)
    need = -(-max_len // config.block_size)
    if blocks < need:
        per = bytes_per_block(cfg, config.block_size, dtype)
        raise KilnError(
            f"the KV cache holds {blocks} blocks of {config.block_size} tokens, fewer than one "
            f"sequence of max_model_len={max_len} needs ({need}); give it more memory "
            f"(>= {need * per} bytes) or lower max_model_len"
        )
    return blocks


def load_tokenizer(path: Path):
    from runtime.tokenizer import load_tokenizer as load

    return load(path)


def _eos_ids(path: Path, cfg: ModelConfig, tokenizer) -> tuple[int, ...]:
    gen = path / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        if eos is not None:
            return tuple(eos) if isinstance(eos, list) else (int(eos),)
    if cfg.eos_token_ids:
        return cfg.eos_token_ids
    return (tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ()
