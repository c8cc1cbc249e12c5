"""Engine configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.errors import KilnError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(dtype: str, device_type: str) -> str:
    """The torch dtype name `dtype` means on a device type: auto is float32 on the CPU and
    bfloat16 on a GPU. Compile and run resolve it alike, so an artifact matches its engine."""
    if dtype == "auto":
        return "float32" if device_type == "cpu" else "bfloat16"
    return dtype


@dataclass(frozen=True)
class EngineConfig:
    model: str = "demo"
    dtype: str = "auto"  # auto: float32 on CPU, bfloat16 on GPU
    device: str = "auto"  # auto: cuda if available, else cpu
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512  # per-step token budget (prefill chunk size)
    block_size: int = 16
    kv_cache_memory: int = 256 * 2**20  # bytes, on CPU
    gpu_memory_utilization: float = 0.90  # fraction of GPU memory Kiln may use, on GPU
    enable_prefix_caching: bool = True
    enforce_eager: bool = False  # GPU: no CUDA graphs
    passes: str | None = None  # pass toggles ("none", "-fuse_x,+y"); None = run the eager module
    target: str = "auto"
    quantization: str | None = None  # None | "fp8"
    tensor_parallel_size: int = 1
    # cached: run the compiled artifact when the cache has it, else the eager reference;
    # on_miss: compile on a cache miss; never: always the eager reference.
    compile: str = "cached"
    artifact: str | None = None  # an artifact folder to run, bypassing the cache lookup

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
        if self.compile not in ("cached", "on_miss", "never"):
            raise KilnError(f"compile={self.compile!r} is invalid; use cached, on_miss or never")
        if self.quantization not in (None, "fp8"):
            raise KilnError(f"quantization={self.quantization!r} is not supported; use fp8 or none")
