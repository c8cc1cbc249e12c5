"""Build a decoder for a checkpoint folder and fill it from `*.safetensors`.

The module is built on the meta device (no memory), materialised on the target device, and
each HF tensor is copied once into its (possibly fused, possibly sharded) Kiln parameter.
Every parameter slice must be written exactly once, so a missing or unexpected tensor, or a
shape mismatch, is reported by name. The compiler reads checkpoints through it, and so does an
engine where its weight stream cannot (`runtime/weights.py`: KILN_WEIGHT_STREAM=0, or a fused
parameter whose parts have different dtypes).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import torch
from safetensors import safe_open

from kiln.errors import KilnError
from model_defs.checkpoint_files import safetensors_files
from model_defs.config import ModelConfig
from model_defs.decoder import DecoderForCausalLM, ParallelConfig
from model_defs.registry import read_config
from model_defs.rope import cos_sin_cache
from model_defs.weight_plan import expected_slices, map_weight, missing_error


def build_model(
    cfg: ModelConfig, dtype: torch.dtype, device: torch.device | str, par: ParallelConfig
) -> DecoderForCausalLM:
    with torch.device("meta"):
        model = DecoderForCausalLM(cfg, par)
    _materialize(model, dtype, torch.device(device))
    model.cos_sin_cache = cos_sin_cache(cfg).to(device)  # always fp32
    return model.eval().requires_grad_(False)


def _materialize(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> None:
    """Give every meta parameter and buffer uninitialised storage on `device`, floating ones in
    `dtype` (the weights are read in next). What `model.to(dtype).to_empty(device)` does, minus
    its meta `empty_like`, which imports sympy on the warm path (0.3 s with bytecode cached,
    2.3 s on an image that disables bytecode writing)."""
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            dt = dtype if p.is_floating_point() else p.dtype
            empty = torch.empty(p.shape, dtype=dt, device=device)
            module._parameters[name] = torch.nn.Parameter(empty, requires_grad=p.requires_grad)
        for name, b in module.named_buffers(recurse=False):
            dt = dtype if b.is_floating_point() else b.dtype
            module._buffers[name] = torch.empty(b.shape, dtype=dt, device=device)


def load_model(
    path: Path,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    par: ParallelConfig | None = None,
) -> DecoderForCausalLM:
    par = par or ParallelConfig()
    family, cfg = read_config(path)
    model = build_model(cfg, dtype, device, par)
    expected = expected_slices(name for name, _ in model.named_parameters())
    params = dict(model.named_parameters())
    jobs = []  # (file, hf_name, param name, shard)
    for file in safetensors_files(path):
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for hf_name in f.keys():
                target = map_weight(family, hf_name, cfg)
                if target is None:
                    continue
                name, shard = target
                if name not in params:
                    raise KilnError(
                        f"{file.name}: {hf_name} maps to {name}, which this config lacks"
                    )
                jobs.append((file, hf_name, name, shard))
    copy = partial(_copy_job, params=params, cfg=cfg, par=par)
    _run_copies(jobs, copy, torch.device(device))
    written = {(name, shard) for _, _, name, shard in jobs}
    if expected - written:
        raise missing_error(path, expected - written)
    return model


def _run_copies(jobs: list, copy, device: torch.device) -> None:
    """Read and copy every tensor, on `env.load_threads()` threads: reading from the page cache
    and host-to-device copies both release the interpreter lock, and one thread reaches only
    a fraction of either bandwidth. On a GPU each thread copies on its own stream."""
    from kiln.env import load_threads

    threads = min(load_threads(), len(jobs))
    handles: dict = {}  # (thread id, file) -> open safetensors handle, for this load only
    local = threading.local()
    # Inference mode is per thread: parameters made under it take in-place writes only there.
    inference = torch.is_inference_mode_enabled()

    def run(job) -> None:
        key = (threading.get_ident(), job[0])
        if key not in handles:
            handles[key] = safe_open(str(job[0]), framework="pt", device="cpu")
        if device.type == "cuda" and threads > 1 and not hasattr(local, "stream"):
            local.stream = torch.cuda.Stream(device)
        stream = getattr(local, "stream", None)
        with torch.inference_mode(inference), torch.cuda.stream(stream):
            copy(handles[key], job)

    if threads <= 1:
        for job in jobs:
            run(job)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, jobs))  # re-raises the first error
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _copy_job(handle, job, params: dict, cfg: ModelConfig, par: ParallelConfig) -> None:
    file, hf_name, name, shard = job
    tensor = handle.get_tensor(hf_name)
    if not tensor.is_floating_point():
        raise KilnError(
            f"{file.name}: {hf_name} has dtype {str(tensor.dtype).removeprefix('torch.')}; "
            "weights must be floating point"
        )
    _copy_into(params[name], tensor, shard, cfg, par, hf_name)


def _copy_into(param, tensor, shard, cfg: ModelConfig, par: ParallelConfig, hf_name: str):
    """Copy this rank's part of `tensor` into its slice of `param`."""
    dst, src = param.data, tensor
    if shard in ("q", "k", "v"):
        q = cfg.num_heads * cfg.head_dim // par.tp_size
        kv = cfg.num_kv_heads * cfg.head_dim // par.tp_size
        offset, size = {"q": (0, q), "k": (q, kv), "v": (q + kv, kv)}[shard]
        dst = dst.narrow(0, offset, size)
        src = src.narrow(0, par.tp_rank * size, size) if src.shape[0] == size * par.tp_size else src
    elif shard in ("gate", "up"):
        size = dst.shape[0] // 2
        dst = dst.narrow(0, 0 if shard == "gate" else size, size)
        src = src.narrow(0, par.tp_rank * size, size) if src.shape[0] == size * par.tp_size else src
    elif shard == "row":
        size = dst.shape[1]
        src = src.narrow(1, par.tp_rank * size, size) if src.shape[1] == size * par.tp_size else src
    if tuple(src.shape) != tuple(dst.shape):
        raise KilnError(
            f"shape mismatch for {hf_name}: checkpoint has {tuple(tensor.shape)}, "
            f"the config implies {tuple(dst.shape) if par.tp_size == 1 else 'a different shape'}"
        )
    dst.copy_(src)
