"""The engine's weights: the model's parameters made from a weight stream's arena
(`runtime/weight_stream.py`), or read by the plain loader where a stream cannot serve.

`load_weights` takes the stream the CLI started before torch was imported (or starts one) and
builds the model on `meta`. When the engine runs in the checkpoint's dtype, every parameter
becomes a view into the arena, so the model exists while its bytes are still arriving and the
caller waits (`Weights.wait`) only before the first forward. Otherwise the parameters are
converted out of the arena once it is full, and the arena is freed. Either way the values are
the plain loader's, bit for bit (tests/runtime/test_weights.py).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kiln import env
from model_defs.decoder import DecoderForCausalLM
from model_defs.weight_plan import PlanUnsupported, WeightPlan
from runtime.cuda_driver import CudaError
from runtime.weight_stream import CudaArena, HostArena, WeightStream, take

log = logging.getLogger("kiln.weights")
# safetensors dtype name -> torch dtype
TORCH_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                "F64": torch.float64}  # fmt: skip


@dataclass
class Weights:
    """The loaded model; `wait()` returns once its parameters hold the checkpoint's values."""

    model: DecoderForCausalLM | None
    stream: WeightStream | None = None  # None: the plain loader read them (see `reason`)
    early: bool = False  # the stream began before torch was imported
    reason: str = ""  # why the plain loader read the weights
    figures: dict[str, float] = field(default_factory=dict)

    def abandon(self) -> None:
        """A load failed: stop using the stream. Its copies finish before the arena can be
        freed (with the model's views, or now), so none lands in memory given back."""
        if self.stream is not None:
            self.stream.discard()

    def wait(self) -> None:
        if self.stream is not None and not self.figures:
            stats = self.stream.wait()
            self.figures = {"streamed": 1.0, "early": float(self.early), **stats.figures()}
            self.figures["start_wall"], self.figures["done_wall"] = stats.t_start, stats.t_done


def load_weights(path: Path, dtype: torch.dtype, device: torch.device) -> Weights:
    """The checkpoint at `path` as a model on `device` in `dtype`."""
    if not env.weight_stream_enabled():
        return _plain(path, dtype, device, "KILN_WEIGHT_STREAM=0")
    name = device_name(device)
    stream = take(path, name)
    early = stream is not None
    stream = stream or WeightStream(path, name)
    try:
        plan, arena = stream.ready()
    except (PlanUnsupported, CudaError, OSError) as e:
        log.warning("weights: the stream cannot read %s (%s); the plain loader reads it", path, e)
        stream.discard()
        return _plain(path, dtype, device, str(e))
    convert = any(TORCH_DTYPES[p.dtype] != dtype for p in plan.params)
    weights = Weights(None, stream, early)
    if convert:
        weights.wait()  # conversion reads the arena: every byte must be there first
    weights.model = model_from_arena(plan, arena, dtype, device)
    if convert:  # the stream is done; views that remain (slots already in dtype) own the arena
        stream.discard()
    return weights


def device_name(device: torch.device) -> str:
    """ "cpu" or "cuda:N", the names a weight stream is keyed by."""
    if device.type != "cuda":
        return device.type
    return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"


def _plain(path: Path, dtype: torch.dtype, device: torch.device, reason: str) -> Weights:
    from model_defs.loader import load_model

    t0 = time.perf_counter()
    model = load_model(path, dtype, device)
    seconds = time.perf_counter() - t0
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    figures = {"streamed": 0.0, "bytes": float(nbytes), "copy_s": seconds,
               "copy_gbps": nbytes / seconds / 1e9 if seconds > 0 else 0.0}  # fmt: skip
    return Weights(model, None, False, reason, figures)


def model_from_arena(
    plan: WeightPlan, arena: HostArena | CudaArena, dtype: torch.dtype, device: torch.device
) -> DecoderForCausalLM:
    """A model whose parameters are the arena's slots: views when a slot already has `dtype`
    (their bytes may still be arriving), copies converted to `dtype` otherwise (the caller
    waits for the stream first)."""
    from model_defs.registry import read_config

    _, cfg = read_config(plan.path)
    with torch.device("meta"):
        model = DecoderForCausalLM(cfg)
    base = arena_tensor(arena, device)  # uint8 [arena_bytes]; its views own a device arena
    converted = False
    slots = {p.name: p for p in plan.params}
    expected = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert expected == {n: s.shape for n, s in slots.items()}, (
        "weight_plan.parameter_shapes drifted"
    )
    for module_name, module in model.named_modules():
        for pname, param in list(module._parameters.items()):
            if param is None:  # e.g. the bias of a Linear without one
                continue
            slot = slots[f"{module_name}.{pname}" if module_name else pname]
            view = base[slot.offset : slot.offset + slot.nbytes]
            tensor = view.view(TORCH_DTYPES[slot.dtype]).view(slot.shape)
            if tensor.dtype != dtype:
                tensor, converted = tensor.to(dtype, copy=True), True
            module._parameters[pname] = torch.nn.Parameter(tensor, requires_grad=False)
    if converted and device.type == "cuda":  # the copies read the arena, which may go with
        torch.cuda.synchronize(device)  # `base` when no view of it remains
    model.cos_sin_cache = model.cos_sin_cache.to(device)  # real values even on meta; fp32
    return model.eval()


def arena_tensor(arena: HostArena | CudaArena, device: torch.device) -> torch.Tensor:
    """The arena's bytes as a uint8 tensor on `device`, sharing its memory."""
    if isinstance(arena, HostArena):
        return torch.frombuffer(arena.buffer, dtype=torch.uint8, count=arena.nbytes)
    torch.cuda.init()
    base = torch.as_tensor(_DeviceBytes(arena), device=device)
    arena.viewed = True
    assert base.data_ptr() == arena.ptr, "torch copied the arena instead of viewing it"
    return base


class _DeviceBytes:
    """A device arena torch can view (`__cuda_array_interface__`). torch holds this object
    until the last tensor over the arena is gone, and then the arena's memory is freed: the
    parameters own their bytes as a plain load's would, so a process that builds engines one
    after another (`LLM`, benchmarks) gets each one's weights back."""

    def __init__(self, arena: CudaArena):
        self.arena = arena
        self.__cuda_array_interface__ = {
            "shape": (arena.nbytes,), "typestr": "|u1", "data": (arena.ptr, False),
            "version": 2, "strides": None,
        }  # fmt: skip

    def __del__(self) -> None:
        try:
            self.arena.free()
        except Exception as e:  # noqa: BLE001 - a finalizer must not raise
            if not sys.is_finalizing():  # at exit the driver may be torn down first
                log.warning("weights: the arena (%d bytes) was not freed: %s", self.arena.nbytes, e)
