"""Engine configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.errors import KilnError

DTYPES = ("auto", "float32", "bfloat16", "float16")
COMPILE_MODES = ("cached", "on_miss", "never")
QUANTIZATIONS = ("fp8",)

# The EngineConfig fields a compiled artifact depends on (`kiln compile` takes these flags).
COMPILE_FIELDS = (
    "target", "dtype", "quantization", "tensor_parallel_size", "passes", "max_num_batched_tokens"
)  # fmt: skip


def resolve_dtype(dtype: str, device_type: str) -> str:
    """The torch dtype name `dtype` means on a device type: auto is float32 on the CPU and
    bfloat16 on a GPU. Compile and run resolve it alike, so an artifact matches its engine."""
    if dtype == "auto":
        return "float32" if device_type == "cpu" else "bfloat16"
    return dtype


def _opt(default, help: str, **flag):
    """A field with its CLI help (and argparse extras): `kiln.commands.flags` derives the
    engine flags of generate/serve/bench from these fields, defaults included."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass(frozen=True)
class EngineConfig:
    model: str = "demo"
    dtype: str = _opt(
        "auto", "auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16 or float16"
    )
    device: str = _opt("auto", "auto (cuda if available, else cpu), cpu or cuda[:N]")
    max_model_len: int | None = _opt(
        None, "context length; default: the model's max_position_embeddings"
    )
    max_num_seqs: int = _opt(64, "most sequences in one step")
    max_num_batched_tokens: int = _opt(
        512, "per-step token budget (prefill chunk size); the compiled graph's largest step"
    )
    max_prefill_while_decoding: int | None = _opt(
        None,
        "prefill tokens a step may carry while other sequences decode (longer prompts are "
        "chunked; it rises to twice the recent arrival rate of prompt tokens when that is more): "
        "bounds how long a running stream's next token waits on newly arrived prompts; default: "
        "128 for `kiln serve` on a GPU whose steps replay CUDA graphs, else none; a value of at "
        "least the step budget is no bound",
    )
    block_size: int = _opt(16, "tokens per KV cache block")
    kv_cache_memory: int = _opt(256 * 2**20, "KV cache bytes on CPU (e.g. 256M, 1G)", size=True)
    gpu_memory_utilization: float = _opt(0.90, "fraction of GPU memory Kiln may use")
    enable_prefix_caching: bool = _opt(
        True, "reuse KV blocks of shared prompt prefixes", negate="--no-prefix-caching"
    )
    enforce_eager: bool = _opt(False, "GPU: no CUDA graphs")
    passes: str | None = _opt(
        None,
        "pass toggles: comma list of -name, +name, or 'none' (all optional passes off), applied "
        "left to right, e.g. 'none,+fuse_add_rms_norm'; +name also turns on a pass that is off by "
        "default; a list that starts with '-' needs '=': "
        "--passes=-fuse_attn_quant. Given to generate/serve/bench (without a cached artifact), "
        "the captured graph runs eagerly after these passes",
        metavar="TOGGLES",
    )
    target: str = _opt("auto", "cpu, h100, h200, b200 or auto")
    quantization: str | None = _opt(None, "weight/activation quantization", choices=QUANTIZATIONS)
    tensor_parallel_size: int = _opt(1, "GPUs one model is split over")
    compile: str = _opt(
        "cached",
        "cached: run the compiled artifact if the cache has it; on_miss: compile it first; never: the eager reference",
        choices=COMPILE_MODES,
    )
    artifact: str | None = _opt(None, "run this artifact folder, bypassing the cache lookup")

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise KilnError(
                f"dtype={self.dtype!r} is not supported; choose one of {', '.join(DTYPES)}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise KilnError(f"device={self.device!r} is invalid; use auto, cpu or cuda[:N]")
        for name in (
            "max_num_seqs",
            "max_num_batched_tokens",
            "block_size",
            "kv_cache_memory",
            "tensor_parallel_size",
        ):
            if getattr(self, name) < 1:
                raise KilnError(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_prefill_while_decoding is not None and self.max_prefill_while_decoding < 1:
            raise KilnError(
                f"max_prefill_while_decoding={self.max_prefill_while_decoding} must be >= 1 "
                "(a value of at least max_num_batched_tokens is no bound)"
            )
        if self.max_model_len is not None and self.max_model_len < 2:
            raise KilnError(f"max_model_len={self.max_model_len} must be >= 2")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise KilnError(
                f"gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]"
            )
        if self.tensor_parallel_size != 1:
            raise KilnError(
                f"tensor_parallel_size={self.tensor_parallel_size}: the runtime runs one process; "
                "multi-GPU execution is not built yet (`kiln compile --tensor-parallel-size N` "
                "captures the TP graph)"
            )
        if self.compile not in COMPILE_MODES:
            raise KilnError(f"compile={self.compile!r} is invalid; use cached, on_miss or never")
        if self.quantization is not None and self.quantization not in QUANTIZATIONS:
            raise KilnError(f"quantization={self.quantization!r} is not supported; use fp8 or none")
