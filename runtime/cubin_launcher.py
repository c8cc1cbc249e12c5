"""Launching a plan artifact's precompiled Triton cubins through the CUDA driver, no compiler.

A kernel body calls `launcher(jit_fn, grid, *args, num_warps=, num_stages=)` (the launch
convention of `ir/kernels/base.py`). `CubinLauncher` finds the cubins built for that function
(by name and source hash), takes the most specialized one whose assumptions the arguments
still satisfy (`mismatch`), packs the arguments as its parameters (the pointers the build's
Triton appends included) and calls `cuLaunchKernel` on torch's current stream, so a CUDA
graph capturing the step records the launch. Each jit function's launches go through one
`LaunchSite` (`runtime/launch_site.py`), which memoises the choice and the packing per
argument layout, so a launch like the last costs a few µs of Python. The runtime's own Triton
release plays no part.
"""

from __future__ import annotations

import ctypes
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from compile_cache.triton_abi import arg_type, constexpr_value, source_hash
from kiln.errors import KilnError
from runtime.launch_site import LaunchSite

# cuda.h values used here.
CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
STATIC_SHARED_LIMIT = 48 * 1024
_WIDER_INT = {"i32": "i64"}  # an i64 parameter takes an i32 value


def mismatch(
    meta: dict, params: Sequence, args: Sequence, num_warps: int, num_stages: int
) -> str | None:
    """Why the cubin described by `meta` cannot take this launch (None: it can). `params` are
    the jit function's parameters (`.name`, `.is_constexpr`)."""
    if len(params) != len(args):
        return f"{len(args)} arguments for {len(params)} parameters"
    for name, value in (("num_warps", num_warps), ("num_stages", num_stages)):
        if value != meta[name]:
            return f"{name}={value}, built with {meta[name]}"
    signature, constexprs, spec = meta["signature"], meta["constexprs"], meta["specialization"]
    for param, value in zip(params, args, strict=True):
        name = param.name
        if param.is_constexpr:
            if constexpr_value(value) != constexprs.get(name):
                return f"{name}={constexpr_value(value)!r}, built with {constexprs.get(name)!r}"
            continue
        kind, special = arg_type(value)
        if signature[name] == "constexpr":  # specialized: the int equalled 1
            if special != "one":
                return f"{name}={value!r}, built for {name}=1"
            continue
        if kind != signature[name] and _WIDER_INT.get(kind) != signature[name]:
            return f"{name} is {kind}, built for {signature[name]}"
        if spec.get(name) == "div16" and special != "div16":
            what = "pointer is not 16-byte aligned" if kind[0] == "*" else "is not a multiple of 16"
            return f"{name} {what}, built assuming it is"
    return None


class CudaDriver:
    """The few libcuda calls a launch needs, each checked."""

    def __init__(self):
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise KilnError(f"cannot load the CUDA driver (libcuda.so.1): {e}") from None
        # Declared, so ctypes converts plain ints in C: function, grid, block, shared memory,
        # stream, kernel parameters (void**), extra (NULL).
        u, p = ctypes.c_uint, ctypes.c_void_p
        self.lib.cuLaunchKernel.argtypes = (p, u, u, u, u, u, u, u, p, p, p)
        self.lib.cuLaunchKernel.restype = ctypes.c_int

    def check(self, result: int, what: str) -> None:
        if result != 0:
            text = ctypes.c_char_p()
            self.lib.cuGetErrorString(result, ctypes.byref(text))
            message = text.value.decode() if text.value else f"error {result}"
            raise KilnError(f"CUDA driver: {what} failed: {message}")

    def load_function(self, cubin: bytes, name: str, shared: int) -> int:
        """The handle of kernel `name` of `cubin`, allowed `shared` bytes of shared memory."""
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(module), cubin), f"loading {name}")
        self.check(
            self.lib.cuModuleGetFunction(ctypes.byref(function), module, name.encode()),
            f"finding {name} in its cubin",
        )
        if shared > STATIC_SHARED_LIMIT:
            self.check(
                self.lib.cuFuncSetAttribute(
                    function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared
                ),
                f"allowing {shared} bytes of shared memory for {name}",
            )
        return function.value

    def current_stream(self, device_index: int) -> int:
        """The handle of torch's current stream on the device (a capture's stream inside
        `torch.cuda.graph`): what `torch.cuda.current_stream(device).cuda_stream` gives, and
        what Triton's own launcher reads, without building a Stream object."""
        return torch._C._cuda_getCurrentRawStream(device_index)

    def launch(
        self, function: int, x: int, y: int, z: int, block: int, shared: int, stream: int,
        params: int,
    ) -> None:  # fmt: skip
        """Launch `function` on grid (x, y, z) with `params` the address of its parameters'
        pointer array (the driver copies the parameters before returning)."""
        result = self.lib.cuLaunchKernel(
            function, x, y, z, block, 1, 1, shared, stream, params, None
        )
        if result != 0:
            self.check(result, "cuLaunchKernel")


class CubinTable:
    """The cubins of a plan by jit function (name, source hash), most specialized first, and
    the choice of one for a launch. Reads metadata only: it needs no GPU."""

    def __init__(self, metas: list[dict]):
        for meta in metas:
            for flag in ("launch_cooperative_grid", "launch_pdl"):
                if meta.get(flag):
                    raise KilnError(f"kernel {meta['id']} needs {flag}, which this launcher lacks")
            if meta.get("num_ctas", 1) != 1:
                raise KilnError(f"kernel {meta['id']} needs {meta['num_ctas']} CTAs per cluster")
        self.by_function: dict[tuple[str, str], list[dict]] = {}
        for meta in sorted(metas, key=lambda m: -len(m["specialization"])):
            self.by_function.setdefault((meta["fn"], meta["source_hash"]), []).append(meta)
        self._keys: dict[int, tuple[str, str, list]] = {}  # id(jit fn) -> key and params

    @classmethod
    def from_folder(cls, folder: Path, ids: Sequence[str]) -> CubinTable:
        return cls([json.loads((folder / f"{i}.json").read_text()) for i in ids])

    def select(self, fn, args: Sequence, num_warps: int, num_stages: int) -> tuple[dict, list]:
        """(metadata of the most specialized cubin of `fn` that takes these arguments, the
        function's parameters); KilnError naming the kernel and every mismatch if none."""
        known = self._keys.get(id(fn))
        if known is None:
            known = self._keys[id(fn)] = kernel_key(fn)
        name, digest, params = known
        candidates = self.by_function.get((name, digest))
        if not candidates:
            raise KilnError(
                f"the artifact has no cubin for kernel {name} with this source (hash "
                f"{digest[:12]}); it was built from other kernel code: recompile it"
            )
        reasons = []
        for meta in candidates:
            why = mismatch(meta, params, args, num_warps, num_stages)
            if why is None:
                return meta, params
            reasons.append(f"{meta['id']}: {why}")
        raise KilnError(
            f"no cubin of kernel {name} takes this launch ({'; '.join(reasons)}); the step "
            "differs from what the artifact was compiled for: recompile it"
        )


def kernel_key(fn) -> tuple[str, str, list]:
    """How the table knows a jit function (Triton's, or a host-only `HostKernel`): its name,
    its source hash (the cubins' `fn` and `source_hash`) and its parameters."""
    return fn.__name__, source_hash(fn), params_of(fn)


@dataclass(frozen=True)
class Param:
    name: str
    is_constexpr: bool


def params_of(fn) -> list:
    """A jit function's parameters (`.name`, `.is_constexpr`). Triton's interpreter and a
    host-only kernel (`ir/host_triton.py`) wrap the function without them: they are read from
    its annotations there, as Triton reads them (constexpr in the annotation's text)."""
    params = getattr(fn, "params", None)
    if params is not None:
        return params
    signature = inspect.signature(fn.fn)
    return [Param(p.name, "constexpr" in str(p.annotation)) for p in signature.parameters.values()]


class CubinLauncher:
    """The launcher a plan's kernel bodies are bound to on the GPU (see the module docstring).
    `driver` defaults to libcuda's; tests give one with libcuda stubbed."""

    def __init__(
        self, table: CubinTable, cubins: dict[str, bytes], device: torch.device, driver=None
    ):
        self.table, self.device = table, device
        self.driver = driver if driver is not None else CudaDriver()
        self.device_index = _device_index(device)
        # Scratch buffers, never freed: a captured CUDA graph keeps using the one it saw.
        self._scratch: dict[tuple[str, str], list[torch.Tensor]] = {}
        self.sites: dict[int, LaunchSite] = {}  # id(jit fn) -> its site (which holds the fn)
        torch.empty(1, device=device)  # torch makes the device's primary context current
        self.functions: dict[str, int] = {}
        for metas in table.by_function.values():
            for meta in metas:
                self.functions[meta["id"]] = self.driver.load_function(
                    cubins[meta["id"]], meta["kernel_name"], meta["shared"]
                )

    @classmethod
    def from_folder(cls, folder: Path, ids: Sequence[str], device: torch.device) -> CubinLauncher:
        cubins = {i: (folder / f"{i}.cubin").read_bytes() for i in ids}
        return cls(CubinTable.from_folder(folder, ids), cubins, device)

    def __call__(self, fn, grid, *args, num_warps: int, num_stages: int, **kwargs) -> None:
        if kwargs:
            raise KilnError(f"{fn.__name__}: launch options {sorted(kwargs)} are not supported")
        site = self.sites.get(id(fn))
        if site is None:
            site = self.sites[id(fn)] = LaunchSite(self, fn)
        site(grid, args, num_warps, num_stages)

    def scratch_ptr(self, meta: dict, kind: str, grid: tuple) -> int:
        """A scratch buffer of `<kind>_scratch_size` bytes per program, kept per kernel and
        grown (never shrunk or freed) as grids grow; 0 when the kernel needs none."""
        size = meta[f"{kind}_scratch_size"]
        if size == 0:
            return 0
        need = grid[0] * grid[1] * grid[2] * meta.get("num_ctas", 1) * size
        bufs = self._scratch.setdefault((meta["id"], kind), [])
        if not bufs or bufs[-1].numel() < need:
            bufs.append(torch.empty(need, dtype=torch.uint8, device=self.device))
        return bufs[-1].data_ptr()


def _device_index(device: torch.device) -> int | None:
    """The CUDA ordinal launches go to: `cuda` alone means the current device (as for
    `torch.cuda.current_stream`); None off CUDA (a stubbed driver on the CPU)."""
    if device.type != "cuda":
        return device.index
    return device.index if device.index is not None else torch.cuda.current_device()
