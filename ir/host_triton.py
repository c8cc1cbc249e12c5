"""Where kernel modules get Triton from: Triton itself, or a host-side stand-in for a plan.

Kernel modules of `ir/kernels/` never `import triton`; they write
`from ir.host_triton import tl, triton`, and those names resolve (module `__getattr__`) to
Triton's own modules, unless the process entered host-only mode first. A process that runs a
plan artifact only runs the kernels' host code: it computes grids and hands each launch to
the cubin launcher, which needs of a `@triton.jit` function its name, its source and its
parameters. A process that runs one engine and nothing else (`kiln serve`'s engine core) calls
`permit_host_only()`; then `enter_host_only()` (the plan loader calls it before importing the
kernel modules) makes `triton` and `tl` stand-ins, so the process never pays `import triton`
(libtriton, LLVM, its runtime: a quarter second or more of a warm start). The stand-in's `jit` keeps each function as a
`HostKernel`, `cdiv` and `next_power_of_2` compute as Triton's do, `tl.constexpr` is a plain
class, and any other name is a `Placeholder` that fails only when called.
`host_builtins()` gives a stored plain Triton module (a Helion kernel's) the same stand-ins
for its `import triton` statements.
"""

from __future__ import annotations

import builtins
import sys
import types
from collections.abc import Callable
from typing import Any

from kiln.errors import KilnError

_permitted = False
_host_only = False
_real_given = False  # a kernel module got Triton's own modules


def permit_host_only() -> None:
    """Let a plan this process loads later run host-only. For a process whose only work is one
    engine: host-only mode lasts as long as the process, and in it nothing can compile or
    launch a kernel through Triton's JIT (a compile, a JIT or eager engine, an artifact whose
    code launches kernels itself). Anywhere else a plan loads with Triton."""
    global _permitted
    _permitted = True


def enter_host_only() -> bool:
    """Give kernel modules the stand-ins from now on, if the process permitted it and Triton
    is not loaded: neither imported in this process nor given to a kernel module. Returns
    whether host-only mode is on (once on, it stays on for the process)."""
    global _host_only
    if not _host_only and _permitted and not _real_given and "triton" not in sys.modules:
        _host_only = True
    return _host_only


def check_not_host_only(what: str) -> None:
    """KilnError if this process loaded the kernels host-only: `what` needs Triton."""
    if _host_only:
        raise KilnError(f"{what} needs Triton, but {_WHY}")


def host_only() -> bool:
    """Whether this process runs kernels' host code with the stand-ins."""
    return _host_only


def __getattr__(name: str) -> Any:
    """`triton` and `tl`: Triton's modules, or the stand-ins in host-only mode."""
    global _real_given
    if name not in ("triton", "tl"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _host_only:
        return TRITON if name == "triton" else TRITON.language
    import triton
    import triton.language

    _real_given = True
    return triton if name == "triton" else triton.language


_WHY = (
    "this process loaded its kernels host-only to run a plan over its cubins "
    "(ir/host_triton.py), and Triton is not loaded in it"
)


class HostOnlyError(KilnError, AttributeError):
    """Something needed Triton in a host-only process. An AttributeError too, so that
    `getattr(kernel, name, default)` still gets its default."""


class HostKernel:
    """A `@triton.jit` function in host-only mode: the function itself as `fn` (as Triton's
    `JITFunction` keeps it, so the cubin launcher reads the same name, source and parameters)
    under its own names. Launching it through a JIT fails: there is none in this process."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__name__, self.__qualname__ = fn.__name__, fn.__qualname__
        self.__module__ = fn.__module__

    def __getattr__(self, name: str) -> Any:
        # Any other attribute of a JITFunction (`params`, `src`, `run`) is the compiler's.
        if name.startswith("__"):
            raise AttributeError(name)
        raise HostOnlyError(f"{self.__name__}.{name} is Triton's, but {_WHY}")

    def __getitem__(self, grid: Any) -> Any:
        raise self._no_jit()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._no_jit()

    def __repr__(self) -> str:
        return f"<HostKernel {self.__module__}.{self.__qualname__}>"

    def _no_jit(self) -> KilnError:
        return HostOnlyError(f"kernel {self.__name__} cannot run through Triton's JIT: {_WHY}")


class Placeholder:
    """A Triton name the stand-in does not provide: it can be named (its attributes are
    placeholders too: `tl.float32`, `libdevice.rsqrt`) but not called."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Placeholder:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Placeholder(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise KilnError(
            f"{self._name} was called, but Triton is not loaded in this process (the kernels "
            "were loaded host-only, to run a plan over its cubins): host code may only use "
            "triton.jit, triton.cdiv, triton.next_power_of_2 and tl.constexpr"
        )

    def __repr__(self) -> str:
        return f"<host-only stand-in for {self._name}>"


class _StandIn(types.ModuleType):
    """A stand-in module: its own attributes, and a `Placeholder` for any other name."""

    def __getattr__(self, attr: str) -> Placeholder:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Placeholder(f"{self.__name__}.{attr}")


class constexpr:  # noqa: N801 (Triton's name)
    """`tl.constexpr`: a compile-time parameter's annotation, or a value wrapped as one."""

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"constexpr[{self.value!r}]"


def jit(fn: Callable | None = None, **options: Any) -> Any:
    """`@triton.jit` and `@triton.jit(...)`: the function as a `HostKernel` (options only
    matter to a compiler)."""
    return HostKernel(fn) if fn is not None else HostKernel


def cdiv(x: int, div: int) -> int:
    return (x + (div - 1)) // div


def next_power_of_2(n: int) -> int:
    """The smallest power of 2 >= n, bit for bit as Triton computes it (0 gives 0)."""
    n -= 1
    for shift in (1, 2, 4, 8, 16, 32):
        n |= n >> shift
    return n + 1


# Helion's host code for kernels with device-side tensor descriptors (TMA) installs Triton's
# scratch allocator: these stand-ins take that call. Host-side descriptors
# (`triton.tools.tensor_descriptor`) are not provided: such a kernel fails at its first launch.
class NullAllocator:
    """`triton.runtime._allocation.NullAllocator`: Helion's host code for TMA kernels installs a
    scratch allocator when it finds this one in place."""


def set_allocator(allocator: Any) -> None:
    """`triton.set_allocator`: nothing to do, the cubin launcher allocates every kernel's
    global scratch itself (`runtime/cubin_launcher.py` `scratch_ptr`)."""


TRITON = _StandIn("triton")
TRITON.jit, TRITON.cdiv, TRITON.next_power_of_2 = jit, cdiv, next_power_of_2
TRITON.set_allocator = set_allocator
TRITON.language = _StandIn("triton.language")
TRITON.language.constexpr = constexpr
TRITON.runtime = _StandIn("triton.runtime")
TRITON.runtime._allocation = _StandIn("triton.runtime._allocation")
TRITON.runtime._allocation.NullAllocator = NullAllocator
TRITON.runtime._allocation._allocator = NullAllocator()
# Inductor's device-side helper modules (`triton_helpers`, `triton_compat`), which the stored
# sources of Helion kernels import for device code only.
INDUCTOR_DEVICE_HELPERS = "torch._inductor.runtime.triton_"


def host_builtins() -> dict[str, Any]:
    """Builtins for running a stored plain Triton module host-only: its `import triton...`
    statements, and those of Inductor's device-side helper modules, get stand-ins; every other
    import is the real one."""
    return {**builtins.__dict__, "__import__": _import}


def _import(
    name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
) -> Any:
    if not level and _inductor_device_helpers(name, fromlist):
        # `from torch._inductor.runtime import triton_helpers`, `from
        # torch._inductor.runtime.triton_helpers import math as tl_math`: names for device code
        return _StandIn(name)
    if level or (name != "triton" and not name.startswith("triton.")):
        return builtins.__import__(name, globals, locals, fromlist, level)
    if not fromlist:  # `import triton.x` binds the top package
        return TRITON
    module: Any = TRITON
    for part in name.split(".")[1:]:
        module = getattr(module, part)
    return module


def _inductor_device_helpers(name: str, fromlist: Any) -> bool:
    if name.startswith(INDUCTOR_DEVICE_HELPERS):
        return bool(fromlist)  # a bare `import torch._inductor...` binds `torch`: the real one
    return (
        name == INDUCTOR_DEVICE_HELPERS.rpartition(".")[0]
        and bool(fromlist)
        and all(f.startswith("triton_") for f in fromlist)
    )
