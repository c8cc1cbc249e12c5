"""Target descriptors: what lowering needs to know about the machine a model will run on.

A `Target` is data, not a device handle: `kiln compile --target b200` on a CPU box builds for a
B200 it has never seen. `get_target("auto")` is the one place that asks the host what it is.
The descriptor goes into the compile-cache key through `to_json()`, so every field that can
change a compiled artifact must be a field here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from functools import cache

from kiln.errors import KilnError

_GB = 10**9
_DEVICE_TYPES = ("cpu", "cuda")
_ARCHS = (None, "sm_90a", "sm_100a")


@dataclass(frozen=True)
class Target:
    """One compile target; satisfies `ir.registry.TargetLike`."""

    name: str
    device_type: str  # "cpu" | "cuda"
    arch: str | None  # "sm_90a" | "sm_100a" | None (cpu)
    compute_capability: tuple[int, int] | None  # (9, 0) | (10, 0) | None
    sm_count: int  # streaming multiprocessors (CPU: 0)
    memory_bytes: int  # device memory (CPU: 0, sized at run time)
    memory_bandwidth_bytes_s: float  # peak HBM bandwidth (CPU: 0.0)
    has_fp8: bool
    has_fp4: bool
    warp_size: int  # 32 on NVIDIA; 1 on CPU (no warps)

    def __post_init__(self) -> None:
        if self.device_type not in _DEVICE_TYPES:
            raise ValueError(
                f"Target.device_type={self.device_type!r}: use one of {', '.join(_DEVICE_TYPES)}"
            )
        if self.arch not in _ARCHS:
            raise ValueError(f"Target.arch={self.arch!r}: use one of {_ARCHS}")
        if (self.device_type == "cuda") != (self.arch is not None):
            raise ValueError(
                f"Target {self.name!r}: arch={self.arch!r} does not fit "
                f"device_type={self.device_type!r}; CUDA targets need an arch, CPU targets none"
            )
        if (self.arch is None) != (self.compute_capability is None):
            raise ValueError(
                f"Target {self.name!r}: compute_capability={self.compute_capability!r} must be "
                f"set exactly when arch is (arch={self.arch!r})"
            )

    @property
    def is_cuda(self) -> bool:
        return self.device_type == "cuda"

    @property
    def capability_int(self) -> int | None:
        """Compute capability as Triton's `GPUTarget` wants it: (9, 0) -> 90."""
        if self.compute_capability is None:
            return None
        major, minor = self.compute_capability
        return major * 10 + minor

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) for the compile-cache key and the manifest."""
        return json.dumps(asdict(self), sort_keys=True)


CPU = Target("cpu", "cpu", None, None, 0, 0, 0.0, False, False, 1)
H100 = Target("h100", "cuda", "sm_90a", (9, 0), 132, 80 * _GB, 3.35e12, True, False, 32)
H200 = Target("h200", "cuda", "sm_90a", (9, 0), 132, 141 * _GB, 4.8e12, True, False, 32)
B200 = Target("b200", "cuda", "sm_100a", (10, 0), 148, 192 * _GB, 8.0e12, True, True, 32)

TARGETS: dict[str, Target] = {t.name: t for t in (CPU, H100, H200, B200)}

# An H100 reports ~80 GB (79.6 GiB usable), an H200 ~141 GB: anything above this is an H200.
_H200_MIN_BYTES = 100 * _GB


def get_target(name: str) -> Target:
    """The named target, or with "auto" the host's own (its first CUDA device, else the CPU)."""
    key = name.strip().lower()
    if key == "auto":
        return detect_host_target()
    try:
        return TARGETS[key]
    except KeyError:
        valid = ", ".join([*TARGETS, "auto"])
        raise KilnError(f"unknown target {name!r}; valid targets: {valid}") from None


@cache  # the host does not change under us; eager kernel calls ask on every launch
def detect_host_target() -> Target:
    """Map the host's first CUDA device to a known target; the CPU when there is none."""
    import torch

    if not torch.cuda.is_available():
        return CPU
    capability = torch.cuda.get_device_capability(0)
    memory = torch.cuda.get_device_properties(0).total_memory
    return target_for_device(capability, memory)


def target_for_device(capability: tuple[int, int], memory_bytes: int) -> Target:
    """Pure mapping from (compute capability, memory) to a target; unknown GPUs map to cpu."""
    if capability == (9, 0):
        return H200 if memory_bytes >= _H200_MIN_BYTES else H100
    if capability == (10, 0):
        return B200
    return CPU


# The target whose pinned kernel configs kernel bodies use, when a caller fixes it
# (`configs_for`): building a plan artifact for a GPU the host lacks, and running one (its cubins
# were compiled with its own target's configs, whatever GPU or interpreter runs them).
_CONFIG_TARGET: ContextVar[str | None] = ContextVar("kiln_config_target", default=None)


@contextmanager
def configs_for(target: str) -> Iterator[None]:
    """Inside the block, kernel bodies take `target`'s pinned configs
    (`ir.kernels.base.runtime_config`)."""
    token = _CONFIG_TARGET.set(target)
    try:
        yield
    finally:
        _CONFIG_TARGET.reset(token)


def config_target() -> str | None:
    """The target `configs_for` fixed, or None."""
    return _CONFIG_TARGET.get()
