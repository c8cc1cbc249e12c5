"""Cross-compilation: plain Triton source and cubins of every kernel for a target arch.

Works on a host with no GPU: `triton.compile(ASTSource(...), target=GPUTarget("cuda", 90|100,
32))` needs only Triton's bundled ptxas. Per kernel we

1. get its plain Triton module source (Helion: `bind(args).to_triton_code(config)` with the
   target's pinned config, helion imports stripped; Triton kernels: their own source),
2. import that source and call its host function with example args and a recording
   `_launcher`, which captures the launched `@triton.jit` function, grid, arguments,
   num_warps and num_stages instead of launching anything (example tensors may live on the
   CPU),
3. derive Triton's signature from the recorded arguments, specializing like Triton's JIT does
   (ints equal to 1 become constexprs, ints and pointers divisible by 16 get a divisibility
   hint) and record every specialization so a loader can check a launch still satisfies it,
4. compile for the target and return the cubin with its metadata.

The cubin's ABI belongs to the Triton release that built it (3.9 appends a global and a profile
scratch pointer to the kernel parameters; earlier releases differ), so `compile_signature`
reads the appended parameters from the PTX entry into the metadata (`scratch_params`), and a
launcher packs exactly those. `lowering/plan_kernels.py` compiles a whole model's launches
with `compile_signature`; `cross_compile` here compiles each registered kernel at its own
example shapes (the kernel tests).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compile_cache.triton_abi import DIVISIBILITY, arg_type, constexpr_value
from ir.kernels.base import (
    KernelSpec,
    PlainSource,
    all_kernels,
    get_kernel,
    load_config,
    load_source,
    variant_config,
)
from ir.targets import Target, get_target
from kiln.errors import KilnError


@dataclass(frozen=True)
class Launch:
    """One recorded kernel launch from a host function."""

    fn: Any  # triton.runtime.JITFunction
    grid: tuple
    args: tuple
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class CrossKernel:
    """One compiled kernel: its plain source, the cubin, and what a loader needs to launch it."""

    name: str  # "<kernel>" or "<kernel>.<variant>", plus ".<i>" when a source launches several
    kernel_name: str  # the @triton.jit function = the cubin's entry symbol
    entry: str  # host function in `source` that allocates outputs and launches
    source: str  # plain Triton module: imports torch and triton only
    cubin: bytes
    metadata: dict = field(default_factory=dict)


def cross_compile(
    target: Target | str,
    kernels: Sequence[str] | None = None,
    example_args: dict[str, tuple] | None = None,
) -> list[CrossKernel]:
    """Compile `kernels` (default: all) for `target`; `example_args` overrides shapes per kernel.

    The compile driver passes the model's real shapes (hidden size, head size, ...) through
    `example_args`, keyed by kernel name (or "<kernel>.<variant>"); the token count in them
    should be odd and above 1 so no per-step size gets specialized.
    """
    target = get_target(target) if isinstance(target, str) else target
    if not target.is_cuda:
        raise KilnError(f"cross-compilation needs a CUDA target, not {target.name!r}")
    specs = all_kernels() if kernels is None else [get_kernel(k) for k in kernels]
    overrides = example_args or {}
    out: list[CrossKernel] = []
    for spec in specs:
        for variant in spec.variants:
            key = spec.name if variant == "default" else f"{spec.name}.{variant}"
            args = overrides.get(key, overrides.get(spec.name))
            out.extend(compile_kernel(spec, target, variant, args))
    return out


def compile_kernel(
    spec: KernelSpec, target: Target, variant: str = "default", args: tuple | None = None
) -> list[CrossKernel]:
    """Plain source and cubin(s) of one kernel variant for `target`."""
    config = variant_config(load_config(spec.name, target.name), variant)
    if args is None:
        args = spec.example_args("cpu", variant)
    plain = spec.plain_source(config, args, variant)
    launches = record_launches(plain, args)
    base = spec.name if variant == "default" else f"{spec.name}.{variant}"
    compiled = []
    for i, launch in enumerate(launches):
        name = base if len(launches) == 1 else f"{base}.{i}"
        compiled.append(_compile_launch(name, plain, launch, target, config))
    return compiled


def record_launches(plain: PlainSource, args: tuple) -> list[Launch]:
    """Run the host function of `plain` with a launcher that records instead of launching."""
    module = load_source(plain.source)
    launches: list[Launch] = []

    def recorder(fn, grid, *kernel_args, num_warps, num_stages, **kwargs):
        if kwargs:
            raise NotImplementedError(f"launch options {sorted(kwargs)} are not recorded")
        launches.append(Launch(fn, tuple(grid), kernel_args, num_warps, num_stages))

    getattr(module, plain.entry)(*args, _launcher=recorder)
    if not launches:
        raise RuntimeError(f"{plain.entry} launched no kernel for the example arguments")
    return launches


def signature_of(fn: Any, args: tuple, specialize: bool = True) -> tuple[dict, dict, dict, dict]:
    """Triton (signature, constexprs, attrs, specialization) for `fn` called with `args`.

    `specialize=False` gives the generic variant: no int becomes a constexpr for equalling 1
    and no divisibility hint is assumed, so its cubin takes any runtime value or alignment."""
    params = fn.params
    if len(params) != len(args):
        raise TypeError(f"{fn.__name__} takes {len(params)} arguments, launched with {len(args)}")
    signature, constexprs, attrs, spec = {}, {}, {}, {}
    for i, (param, value) in enumerate(zip(params, args, strict=True)):
        name = param.name
        if param.is_constexpr:
            signature[name], constexprs[name] = "constexpr", constexpr_value(value)
            continue
        kind, special = arg_type(value)
        if not specialize:
            special = None
        if special == "one":
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = kind
        if special == "div16":
            attrs[(i,)] = [["tt.divisibility", DIVISIBILITY]]
        if special:
            spec[name] = special
    return signature, constexprs, attrs, spec


def _compile_launch(
    name: str, plain: PlainSource, launch: Launch, target: Target, config: dict
) -> CrossKernel:
    signature, constexprs, attrs, spec = signature_of(launch.fn, launch.args)
    cubin, metadata = compile_signature(
        launch.fn, signature, constexprs, attrs, launch.num_warps, launch.num_stages, target
    )
    metadata.update(
        kernel=name,
        specialization=spec,  # arg -> "one" | "div16": must still hold when launched
        example_grid=list(launch.grid),
        config=config,
    )
    return CrossKernel(
        name=name,
        kernel_name=launch.fn.__name__,
        entry=plain.entry,
        source=plain.source,
        cubin=cubin,
        metadata=metadata,
    )


def compile_signature(
    fn: Any,
    signature: dict,
    constexprs: dict,
    attrs: dict,
    num_warps: int,
    num_stages: int,
    target: Target,
) -> tuple[bytes, dict]:
    """(cubin, metadata) of `fn` compiled for `target` with one signature.

    The metadata says what a launcher needs: warps, shared memory, the kernel parameters in
    order, and `scratch_params`, the pointers the build's Triton appends after them (read
    from the PTX entry, whose parameter count is the truth for this release's ABI)."""
    import triton
    from triton.backends.compiler import GPUTarget

    src = triton.compiler.ASTSource(fn, signature, constexprs, attrs)
    # FP fusion pinned on: Triton 3.10 flips its default, and the cubin must not drift.
    options = {"num_warps": num_warps, "num_stages": num_stages, "enable_fp_fusion": True}
    compiled = triton.compile(
        src, target=GPUTarget("cuda", target.capability_int, target.warp_size), options=options
    )
    meta = compiled.metadata
    arg_names = [n for n, t in signature.items() if t != "constexpr"]
    appended = ptx_param_count(compiled.asm["ptx"], meta.name) - len(arg_names)
    if appended not in (0, 1, 2):
        raise RuntimeError(f"{fn.__name__}: the PTX entry has {appended} unexpected parameters")
    metadata = {
        "kernel_name": meta.name,
        "target": target.name,
        "arch": target.arch,
        "triton_version": triton.__version__,
        "num_warps": meta.num_warps,
        "num_stages": meta.num_stages,
        "num_ctas": getattr(meta, "num_ctas", 1),
        "shared": meta.shared,
        "global_scratch_size": meta.global_scratch_size,
        "global_scratch_align": getattr(meta, "global_scratch_align", 1),
        "profile_scratch_size": getattr(meta, "profile_scratch_size", 0),
        "profile_scratch_align": getattr(meta, "profile_scratch_align", 1),
        "scratch_params": ["global", "profile"][:appended],
        "launch_cooperative_grid": bool(getattr(meta, "launch_cooperative_grid", False)),
        "launch_pdl": bool(getattr(meta, "launch_pdl", False)),
        "signature": signature,
        "constexprs": {k: _jsonable(v) for k, v in constexprs.items()},
        "arg_names": arg_names,
        "hash": meta.hash,
    }
    return compiled.asm["cubin"], metadata


def ptx_param_count(ptx: str, entry: str) -> int:
    """Number of parameters of the `.entry` named `entry` in `ptx`."""
    match = re.search(rf"\.entry\s+{re.escape(entry)}\s*\((.*?)\)", ptx, re.S)
    if match is None:
        raise RuntimeError(f"no .entry {entry} in the PTX")
    return len(re.findall(r"\.param\b", match.group(1)))


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (int, float, bool, str)) or value is None else str(value)


def write_kernels(kernels: Sequence[CrossKernel], folder: Path) -> None:
    """Write `<name>.cubin`, `<name>.py` and `<name>.json` per kernel into `folder`."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for k in kernels:
        (folder / f"{k.name}.cubin").write_bytes(k.cubin)
        (folder / f"{k.name}.py").write_text(k.source)
        meta = {**k.metadata, "kernel_name": k.kernel_name, "entry": k.entry}
        (folder / f"{k.name}.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
