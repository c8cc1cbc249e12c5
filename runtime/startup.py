"""Engine start-up, top to bottom: load the weights, bind the forward (the loader of the
resolved artifact, or the eager model), warm up, size the KV cache, capture CUDA graphs.
The weights usually stream in the background (`runtime/weights.py`) from before torch was
imported; the start waits for them (`weights_wait`) only before its first forward.

Each step is one named function and one phase in `LoadedModel.phases`, which `kiln bench
startup` reports. The caller resolves what runs (the CLI: cache lookup, compile on a miss) and
hands over its `Loader`; nothing here compiles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kiln.config import EngineConfig, resolve_dtype
from kiln.errors import KilnError
from kiln.timing import timed
from model_defs.config import ModelConfig
from model_defs.kv_cache import KVCaches, allocate_kv_caches, bytes_per_block, num_blocks_for_budget
from model_defs.step_inputs import StepSeq
from runtime.blas_warmup import BlasWarmup
from runtime.loaders import Forward, Loader
from runtime.model_runner import ModelRunner
from runtime.weights import load_weights
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
    description: str  # what runs, in one line
    phases: dict[str, float] = field(default_factory=dict)
    artifact_key: str | None = None  # the compiled artifact running, None = eager
    activation_peak_bytes: int = 0  # GPU: from the warm-up step (or kept with the artifact)
    weight_figures: dict[str, float] = field(default_factory=dict)  # `Weights.figures`
    # Wall-clock marks (time.time()) a caller adds for its start-up report; `kiln serve`'s
    # engine core: t_process_start and t_load_start.
    marks: dict[str, float] = field(default_factory=dict)
    graphs_pending: bool = False  # step CUDA graphs set up but not captured (`capture_graphs`)

    def describe(self) -> str:
        return self.description

    def capture_graphs(self) -> float:
        """Capture the step CUDA graphs a load with `defer_graph_capture` left pending;
        returns the seconds it took (0.0 when none were pending). Until then steps run
        eagerly."""
        if not self.graphs_pending:
            return 0.0
        self.graphs_pending = False
        return self.runner.graphs.capture()

    @property
    def compile_seconds(self) -> float:
        return self.phases.get("compile", 0.0)

    @property
    def load_seconds(self) -> float:
        return sum(v for k, v in self.phases.items() if k != "compile")


def pick_device(config: EngineConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise KilnError(f"device={config.device!r} was asked for, but no CUDA GPU is available")
    return torch.device(config.device)


def load(
    config: EngineConfig,
    loader: Loader,
    phases: dict[str, float] | None = None,
    *,
    defer_graph_capture: bool = False,
    serving: bool = False,
) -> LoadedModel:
    """Start `config.model` with the forward `loader` binds. `phases` may hold what the
    caller already timed (the cache lookup, a compile on a miss). With `defer_graph_capture`
    the step CUDA graphs are set up but left for the caller to capture
    (`LoadedModel.capture_graphs`): `kiln serve`'s engine core reports ready first.
    `serving`: the engine answers requests as they arrive (`kiln serve`), which sets the
    default prefill bound (`scheduler_config`)."""
    from model_defs.registry import read_config, resolve_model_path

    phases = dict(phases or {})
    path = resolve_model_path(config.model)
    device = pick_device(config)
    dtype = getattr(torch, resolve_dtype(config.dtype, device.type))
    blas = BlasWarmup(device, dtype)  # joined before the first forward
    _, cfg = read_config(path)
    max_len = max_model_len(config, cfg)
    with timed(phases, "tokenizer"):
        tokenizer = load_tokenizer(path)
    with timed(phases, "weights"):  # a stream's views: its copies go on in the background
        weights = load_weights(path, dtype, device)
        if loader.reads_weights:
            weights.wait()
    try:
        forward = loader.load(weights.model, phases)  # weights_bind + kernels, or compile
        if blas.thread is not None:
            phases["blas_wait"] = blas.join()  # what the side thread's GEMM still cost the load
        with timed(phases, "weights_wait"):
            weights.wait()  # every weight in place before the first forward
    except BaseException:
        weights.abandon()  # its copies end before the arena can go with the model
        raise
    with timed(phases, "warmup"):
        peak = warm_up(forward, config, cfg, dtype, device, max_len)
    with timed(phases, "kv_alloc"):
        num_blocks = num_kv_blocks(config, cfg, dtype, device, max_len, peak)
        kv = allocate_kv_caches(cfg, num_blocks, config.block_size, dtype, device)
    runner = ModelRunner(forward, forward.compute_logits, kv, config.block_size, device)
    if device.type == "cuda" and not config.enforce_eager:
        runner.graphs = step_graphs(forward, kv, config, device, max_len)
        if not defer_graph_capture:
            with timed(phases, "graph_capture"):
                runner.graphs.capture()
    return LoadedModel(
        name="demo" if config.model == "demo" else path.name,
        path=path,
        cfg=cfg,
        tokenizer=tokenizer,
        runner=runner,
        scheduler_config=scheduler_config(
            config, num_blocks, max_len, graphed_server=serving and _graphed(runner)
        ),
        max_model_len=max_len,
        eos_token_ids=_eos_ids(path, cfg, tokenizer),
        vocab_size=cfg.vocab_size,
        device=device,
        dtype=dtype,
        description=loader.describe(),
        phases=phases,
        artifact_key=forward.key,
        activation_peak_bytes=peak,
        weight_figures=weights.figures,
        graphs_pending=defer_graph_capture and runner.graphs is not None,
    )


def max_model_len(config: EngineConfig, cfg: ModelConfig) -> int:
    max_len = config.max_model_len or cfg.max_position_embeddings
    if max_len > cfg.max_position_embeddings:
        raise KilnError(
            f"max_model_len={max_len} exceeds the model's max_position_embeddings="
            f"{cfg.max_position_embeddings}"
        )
    return max_len


def step_graphs(forward: Forward, kv: KVCaches, config: EngineConfig, device, max_len: int):
    """The step CUDA graphs' runner, not captured yet (`CUDAGraphRunner.capture`)."""
    from runtime.cuda_graphs import CUDAGraphConfig, CUDAGraphRunner

    gcfg = CUDAGraphConfig(
        config.max_num_seqs, -(-max_len // config.block_size),
        max_num_tokens=min(config.max_num_batched_tokens, max_len),
    )  # fmt: skip
    return CUDAGraphRunner(
        forward, forward.compute_logits, kv, gcfg, device, attention_provider="triton",
        warm_every_bucket=forward.compiles_per_shape,
    )  # fmt: skip


# Prefill tokens a served GPU step may carry while sequences decode, unless configured. A step's
# cost grows with its prefill tokens and every decode in it waits for the whole step: on an
# H100, Llama-3.2-1B shape at 32 streaming clients, no bound gave ITL p99/p50 2.45 and this one
# 1.46, for 10% fewer tok/s, still 94% of the offline engine's (docs/serving.md).
SERVED_GPU_PREFILL_WHILE_DECODING = 128


def _graphed(runner: ModelRunner) -> bool:
    return runner.graphs is not None and runner.graphs.enabled


def scheduler_config(
    config: EngineConfig, num_blocks: int, max_len: int, *, graphed_server: bool = False
) -> SchedulerConfig:
    """The scheduler's budgets. An unset prefill bound is SERVED_GPU_PREFILL_WHILE_DECODING for
    a server whose steps replay CUDA graphs (`graphed_server`), where a step that carries a
    bounded prefill costs little more than its own work. Elsewhere it is the whole step budget
    (no bound): offline runs get a batch at once and want throughput; eager GPU steps pay
    their host time again for every extra step; a one-thread CPU engine pays per prefill
    token whatever step it is in."""
    budget = config.max_num_batched_tokens
    bound = config.max_prefill_while_decoding
    if bound is None:
        bound = SERVED_GPU_PREFILL_WHILE_DECODING if graphed_server else budget
    return SchedulerConfig(
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=budget,
        max_prefill_while_decoding=min(bound, budget),
        block_size=config.block_size,
        num_blocks=num_blocks,
        enable_prefix_caching=config.enable_prefix_caching,
        max_model_len=max_len,
    )


def warm_up(
    forward: Forward, config: EngineConfig, cfg: ModelConfig, dtype, device, max_len: int
) -> int:
    """GPU: the activation bytes a step at the token budget needs on top of the weights, 0 on
    CPU. A compiled artifact's is measured by its first load on each kind of GPU and kept with
    its cache entry (its key pins the graph, dtype and versions), so later starts skip the
    warm-up step; the eager forward is measured every time."""
    if device.type != "cuda":
        return 0
    t = min(config.max_num_batched_tokens, max_len)
    key = forward.key
    if key is None:
        return _measure_activation_peak(forward, config, cfg, dtype, device, t)
    from compile_cache import Store

    store = Store()
    name = (
        f"activation_peak/{torch.cuda.get_device_name(device)}/tokens={t}"
        f"/seqs={config.max_num_seqs}/block={config.block_size}"
    )
    kept = store.measurement(key, name)
    if isinstance(kept, int) and not isinstance(kept, bool) and kept >= 0:
        return kept
    peak = _measure_activation_peak(forward, config, cfg, dtype, device, t)
    store.record_measurement(key, name, peak)
    return peak


def _measure_activation_peak(forward: Forward, config, cfg, dtype, device, t: int) -> int:
    """Run one warm-up step of `t` tokens (one prefill, then logits for max_num_seqs rows) on
    a scratch KV cache and return its peak activation bytes."""
    blocks = -(-t // config.block_size)
    scratch = allocate_kv_caches(cfg, blocks, config.block_size, dtype, device)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    runner = ModelRunner(forward, forward.compute_logits, scratch, config.block_size, device)
    step = [StepSeq([0] * t, 0, list(range(blocks)), True)]
    with torch.inference_mode():
        runner.execute(step)
        hidden = torch.zeros(config.max_num_seqs, cfg.hidden_size, dtype=dtype, device=device)
        forward.compute_logits(hidden)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del scratch, runner, hidden
    torch.cuda.empty_cache()
    return int(peak)


def num_kv_blocks(
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
