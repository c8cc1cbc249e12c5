"""Kernels loaded host-only, as a plan's process loads them: `python this.py SOURCE OUT.json`
(a process of its own: host-only mode needs one where Triton was never imported).

Writes the key the cubin launcher gives every `HostKernel` of `ir/kernels/` and of SOURCE (a
stored plain Triton module, imported as the plan loader imports it), the launches SOURCE's
host entry `scale_kernel` makes, what launching through the JIT (or calling another Triton
name) says, and the Triton modules imported. `keys`, `kernel_modules` and `host_launches` serve
the test's own process too, where the kernels are Triton's.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from kiln.errors import KilnError
from runtime.cubin_launcher import kernel_key
from runtime.loaders.plan import import_source


def kernel_modules() -> list:
    """Every module of `ir/kernels/` (importing the package registers the kernels)."""
    import ir.kernels

    names = sorted(m.name for m in pkgutil.iter_modules(ir.kernels.__path__))
    return [importlib.import_module(f"ir.kernels.{name}") for name in names]


def keys(modules: list, kind: type) -> dict[str, list]:
    """{module.global: [name, source hash, [[parameter, is_constexpr], ...]]} of every `kind`
    in the modules' globals, as `kernel_key` gives it."""
    out = {}
    for module in modules:
        for name, value in vars(module).items():
            if isinstance(value, kind):
                fn_name, digest, params = kernel_key(value)
                params = [[p.name, p.is_constexpr] for p in params]
                out[f"{module.__name__}.{name}"] = [fn_name, digest, params]
    return out


def host_launches(module: Any) -> list:
    """The launches `module.scale_kernel` makes on a few shapes: [kernel, grid, arguments
    (tensors as their shapes), warps, stages]."""
    calls = []

    def record(fn, grid, *args, num_warps, num_stages):
        described = [list(a.shape) if isinstance(a, torch.Tensor) else a for a in args]
        calls.append([fn.__name__, list(grid), described, num_warps, num_stages])

    for rows, cols in ((3, 40), (1, 64), (5, 129)):
        module.scale_kernel(torch.ones(rows, cols), 1e-5, _launcher=record)
    return calls


def main(source: str, out: str) -> None:
    from ir.host_triton import HostKernel, enter_host_only, permit_host_only

    assert not enter_host_only(), "host-only mode without the process's permission"
    permit_host_only()
    assert enter_host_only(), "Triton was imported before the kernels"
    from ir.host_triton import tl
    from ir.kernels import attention

    stored = import_source(Path(source))
    attempts = {
        "kernel module": lambda: attention._default_launcher(
            attention._attention_kernel, (1, 1), num_warps=4, num_stages=1
        ),
        "stored source": lambda: stored.scale_kernel(torch.ones(2, 8), 1e-5),
        "other name": lambda: tl.program_id(0),
        "compiler attribute": lambda: attention._attention_kernel.params,
    }
    errors = {}
    for what, attempt in attempts.items():
        try:
            attempt()
        except KilnError as e:
            errors[what] = str(e)
    result = {
        "keys": keys([*kernel_modules(), stored], HostKernel),
        "launches": host_launches(stored),
        "triton_modules": sorted(m for m in sys.modules if m.split(".")[0] == "triton"),
    }
    from compile_cache import Store
    from lowering.compile import CompileOptions, compile_model

    empty = Store(tempfile.mkdtemp())  # a miss, whatever the session's cache holds
    try:  # a compile after a host-only load: refused on the cache miss, before any capture
        opts = CompileOptions(model="demo", target="h100")
        compile_model(opts, store=empty, progress=lambda m: None)
    except KilnError as e:
        errors["compile"] = str(e)
    result["errors"] = errors
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:3])
