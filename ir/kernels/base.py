"""What every kernel file shares: its `KernelSpec`, pinned configs, and `supports` helpers.

A kernel file defines its kernel, registers it on its IR op with `register_impl`, and calls
`register_kernel(KernelSpec(...))` so the cross-compiler can find it. Nothing here imports
helion or triton: registration must stay cheap, because `import ir.kernels` happens on
paths (such as `kiln ops`) that never run a kernel.

Kernel sources follow one launch convention so the cross-compiler and the artifact loader can
treat Helion and hand-written Triton kernels alike: the source is a plain module (torch +
triton only) holding `@triton.jit` function(s) and a host function that allocates outputs and
launches through a keyword `_launcher(jit_fn, grid, *args, num_warps=..., num_stages=...)`.
Passing a different `_launcher` lets a caller record the launch (cross-compile), run it in
Triton's CPU interpreter (tests), or launch a precompiled cubin (runtime).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ir.registry import SupportsFn, TargetLike, register_impl
from ir.targets import config_target

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
# Targets with pinned configs; a CPU run (interpret mode) borrows the first one's.
CONFIG_TARGETS = ("h100", "h200", "b200")

_KERNELS: dict[str, KernelSpec] = {}


@dataclass(frozen=True)
class PlainSource:
    """A kernel as a plain Triton module: `source` defines `entry` (the host launch function)."""

    source: str
    entry: str


@dataclass(frozen=True)
class KernelCase:
    """Small random inputs on which a kernel is checked against its IR op's reference under
    the interpreters (tests/lowering/test_triton_interpret.py, test_helion_kernels.py).

    `args` are the IR op's arguments; `launch` the plain source entry's, where they differ
    (a Helion kernel takes 2-D views, rotary drops `is_neox`, the quant kernels a group
    width). Keep them small (the Triton interpreter runs every program in numpy) and fp32
    for Helion kernels (the interpreter mishandles bf16 casts inside them).
    """

    name: str
    variant: str
    args: tuple
    launch: tuple | None = None

    @property
    def launch_args(self) -> tuple:
        return self.args if self.launch is None else self.launch


@dataclass(frozen=True)
class KernelSpec:
    """A kernel the cross-compiler can turn into cubins.

    `plain_source(config, args)` returns the module source for a config and example args
    (Helion specializes on them); `example_args(device)` builds representative inputs, whose
    shapes fix the compile-time constants (hidden size, head size, ...) of the cubin.
    `variants` names source variants a kernel has (rotary: neox, gptj); each one is compiled.
    `cases()` returns the `KernelCase`s every kernel is tested on; `no_triton_interpreter`
    says why its plain source cannot run in Triton's CPU interpreter (it then runs only in
    Helion's interpret mode and on the GPU).
    """

    name: str
    op: str
    provider: str  # "helion" | "triton"
    plain_source: Callable[[dict, tuple, str], PlainSource]  # (config, args, variant)
    example_args: Callable[[str, str], tuple]  # (device, variant)
    variants: tuple[str, ...] = ("default",)
    cases: Callable[[], tuple[KernelCase, ...]] | None = None
    no_triton_interpreter: str = ""

    def __post_init__(self) -> None:
        if self.provider not in ("helion", "triton"):
            raise ValueError(
                f"KernelSpec.provider={self.provider!r} for {self.name!r}: use 'helion' or 'triton'"
            )
        if not self.variants:
            raise ValueError(f"KernelSpec.variants of {self.name!r} is empty: name at least one")


def register_kernel(spec: KernelSpec) -> KernelSpec:
    if spec.name in _KERNELS:
        raise ValueError(f"kernel {spec.name!r} is registered twice")
    _KERNELS[spec.name] = spec
    return spec


def all_kernels() -> list[KernelSpec]:
    import ir.kernels  # noqa: F401  (importing the package registers every kernel)

    return [_KERNELS[name] for name in sorted(_KERNELS)]


def get_kernel(name: str) -> KernelSpec:
    import ir.kernels  # noqa: F401
    from kiln.errors import KilnError

    try:
        return _KERNELS[name]
    except KeyError:
        valid = ", ".join(sorted(_KERNELS))
        raise KilnError(f"unknown kernel {name!r}; known kernels: {valid}") from None


@cache
def load_config(kernel: str, target: str) -> dict:
    """The pinned config of `kernel` on `target` (configs/<target>/<kernel>.json).

    Pinned configs are why compiling never autotunes: a kernel without one for a target is a
    bug the tests catch, not a reason to search.
    """
    name = target if target in CONFIG_TARGETS else CONFIG_TARGETS[0]
    path = CONFIG_DIR / name / f"{kernel}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no pinned config for kernel {kernel!r} on {name}: add {path}")
    config = json.loads(path.read_text())
    config.pop("record", None)  # how `kiln tune` found it (card, date, effort, timings)
    return config


def variant_config(config: dict, variant: str) -> dict:
    """A config file may hold one config per variant (their loops or best warps differ)."""
    return config[variant] if variant in config else config


def runtime_config(kernel: str, device_type: str) -> dict:
    """Config for a call: the target `configs_for` set, else this host's own target's (h100's
    on the CPU). Every kernel body calls it on every call."""
    fixed = config_target()
    if fixed is not None:
        return load_config(kernel, fixed)
    if device_type != "cuda":
        return load_config(kernel, CONFIG_TARGETS[0])
    from ir.targets import detect_host_target

    return load_config(kernel, detect_host_target().name)


def needs_cuda(target: TargetLike) -> str | None:
    """`supports` for kernels that run only on a CUDA target (Helion on CPU is interpret-only)."""
    if target.device_type != "cuda":
        return f"needs a CUDA target (target {target.name} is {target.device_type})"
    return None


def needs_fp8(target: TargetLike) -> str | None:
    """`supports` for fp8 kernels: a CUDA target whose tensor cores take fp8 (sm_89+)."""
    return needs_cuda(target) or (
        None if target.has_fp8 else f"needs fp8 support (target {target.name} has none)"
    )


# Kernel names launched by in-graph forms while lowering traces them (one list per open
# `recording_launches`); read into the manifest's per-op table. Compile-time only.
_RECORDERS: list[list[str]] = []


@contextmanager
def recording_launches() -> Iterator[list[str]]:
    """Collect the names `note_launch` reports inside the block."""
    names: list[str] = []
    _RECORDERS.append(names)
    try:
        yield names
    finally:
        _RECORDERS.remove(names)


def note_launch(name: str) -> None:
    """Report a kernel an in-graph form put into the graph ("reference: why" for a fallback)."""
    for names in _RECORDERS:
        names.append(name)


def graph_launcher(kernel, grid, *args, num_warps, num_stages, **kwargs):
    """Launch through `torch.library.wrap_triton`: under tracing the launch becomes a graph
    node, so AOTInductor compiles the kernel into the package (no Triton JIT at serve time)."""
    from torch.library import wrap_triton

    note_launch(getattr(kernel, "fn", kernel).__name__)
    return wrap_triton(kernel)[grid](*args, num_warps=num_warps, num_stages=num_stages, **kwargs)


def bind_first(body: Callable, value: Any) -> Callable:
    """`body` with its first parameter (a launcher or runner) bound to `value`; the result's
    signature is the rest of `body`'s, which `register_impl` checks against the op's."""
    signature = inspect.signature(body)
    params = list(signature.parameters.values())[1:]

    @functools.wraps(body)
    def call(*args):
        return body(value, *args)

    call.__signature__ = signature.replace(parameters=params)
    return call


def register_triton_impl(
    op: str, supports: SupportsFn, description: str, default_launcher: Callable
) -> Callable[[Callable], Callable]:
    """Register `body(launcher, *op_args)` as `op`'s triton implementation, in both forms:
    eagerly with `default_launcher` (Triton's JIT, a function of the kernel's own file so its
    plain source stays standalone) and in-graph with `graph_launcher` (what lowering traces
    into an artifact). The body does the host-side checks, picks the config and launches."""

    def wrap(body: Callable) -> Callable:
        eager, in_graph = bind_first(body, default_launcher), bind_first(body, graph_launcher)
        register_impl(
            op, "triton", supports, description, in_graph=in_graph, body=body, body_takes="launcher"
        )(eager)
        return eager

    return wrap


def load_source(source: str) -> Any:
    """Import a generated module from a content-addressed file (Triton reads jit source files)."""
    from kiln.env import cache_dir

    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    name = f"kiln_kernel_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    folder = cache_dir() / "kernel-src"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    if not path.is_file() or path.read_text() != source:
        tmp = path.with_suffix(f".{id(source)}.tmp")
        tmp.write_text(source)
        tmp.replace(path)  # atomic: another process may compile the same kernel
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module
