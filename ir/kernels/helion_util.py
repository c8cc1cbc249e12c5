"""Building, running and exporting Helion kernels without importing helion at module load.

Helion reads a kernel's globals (it rejects closures), so a kernel file keeps `helion` and
`hl` as module globals set to None and `import_helion` binds them on first use. That keeps
`import ir.kernels` free of helion (about 7 s to import here), as the serve path needs.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
from collections.abc import Callable
from contextlib import contextmanager
from functools import cache
from typing import Any

from ir.kernels.base import (
    KernelCase,
    KernelSpec,
    PlainSource,
    bind_first,
    graph_launcher,
    load_source,
    register_kernel,
)
from ir.registry import SupportsFn, TargetLike, register_impl

# Replaces `from helion.runtime import default_launcher as _default_launcher` in generated
# code: the same contract (launch `kernel[grid]`), with no helion import.
_PLAIN_LAUNCHER = '''
def _default_launcher(kernel, grid, *args, num_warps, num_stages, **kwargs):
    """Launch a @triton.jit kernel with Triton's own JIT (plain replacement for Helion's)."""
    return kernel[grid](*args, num_warps=num_warps, num_stages=num_stages, **kwargs)
'''
_HELPERS_IMPORT = "from helion.runtime.triton import helpers as helion_triton_helpers"
_IMPORT_SWAPS = {
    "from torch._inductor.runtime.triton_compat import libdevice": (
        "from triton.language.extra import libdevice"
    ),
}


def import_helion(namespace: dict[str, Any]) -> Any:
    """Import helion and bind `helion` and `hl` into a kernel module's globals."""
    import helion
    import helion.language as hl

    namespace["helion"] = helion
    namespace["hl"] = hl
    return helion


@cache
def helion_kernel(fn: Callable, config_json: str, mode: str) -> Any:
    """A `helion.Kernel` for `fn` with one pinned config.

    mode "run" launches on CUDA, "interpret" runs Helion's eager reference mode (the only way
    Helion runs on a CPU; the same as HELION_INTERPRET=1), "codegen" only generates Triton (it
    must not be in interpret mode, whatever the environment says).
    """
    helion = import_helion(fn.__globals__)
    ref_mode = helion.RefMode.EAGER if mode == "interpret" else helion.RefMode.OFF
    config = helion.Config(**json.loads(config_json))
    # static_shapes=False: the token count stays a runtime argument, so one cubin serves all.
    return helion.kernel(config=config, static_shapes=False, ref_mode=ref_mode)(fn)


def run_helion(fn: Callable, config: dict, *args: Any) -> Any:
    """Call the Helion kernel `fn` on args: for real on CUDA, in interpret mode on a CPU."""
    device = next(a.device for a in args if hasattr(a, "device"))
    mode = "run" if device.type == "cuda" else "interpret"
    return helion_kernel(fn, json.dumps(config, sort_keys=True), mode)(*args)


# Token count standing in for a symbolic (per-step) size when Helion specializes a kernel to
# example arguments: odd and above 1, so Helion treats the size as dynamic, not 0/1.
EXAMPLE_TOKENS = 13


def run_helion_in_graph(fn: Callable, config: dict, *args: Any) -> Any:
    """Call the Helion kernel `fn` as its plain Triton source (no helion at run time),
    launched through `wrap_triton`: under export the launch becomes a graph node, so
    AOTInductor compiles the generated kernel into the package. Eager calls launch it too."""
    plain = _plain_for_args(fn, json.dumps(config, sort_keys=True), _shape_key(args))
    return getattr(load_source(plain.source), plain.entry)(*args, _launcher=graph_launcher)


def _shape_key(args: tuple) -> tuple:
    """Hashable stand-in for args: tensors as (shape, dtype) with symbolic sizes replaced by
    EXAMPLE_TOKENS (a traced step's token count), other values as themselves."""
    import torch

    # Example tensors live on the args' device where this host has it (a GPU host generates
    # for its own GPU), else on the CPU (tracing for a GPU with fake tensors on a CPU host).
    # Never on `meta`: Helion 1.5.0 (with torch 2.11) makes a meta tensor's sizes unbacked
    # symbols and then fails to lower reductions over them.
    key = []
    for a in args:
        if isinstance(a, torch.Tensor):
            shape = tuple(d if type(d) is int else EXAMPLE_TOKENS for d in a.shape)
            usable = a.device.type == "cpu" or (
                a.device.type == "cuda" and torch.cuda.is_available()
            )
            key.append(("tensor", shape, a.dtype, a.device.type if usable else "cpu"))
        else:
            key.append(("value", a))
    return tuple(key)


@cache
def _plain_for_args(fn: Callable, config_json: str, key: tuple) -> PlainSource:
    """Plain source of `fn` for example args rebuilt from `key` (outside any fake mode a
    tracer has active: Helion specializes on real tensors)."""
    import torch

    with outside_tracing():
        args = tuple(
            torch.empty(item[1], dtype=item[2], device=item[3]) if item[0] == "tensor" else item[1]
            for item in key
        )
        return helion_plain_source(fn, json.loads(config_json), args)


@contextmanager
def outside_tracing():
    """Suspend every active torch-function and dispatch mode (export's tracer, fake tensors):
    Helion traces the kernel with its own fake mode, which must not be recorded."""
    import torch
    from torch.utils._python_dispatch import _disable_current_modes

    function_modes = []
    while torch._C._len_torch_function_stack() > 0:
        function_modes.append(torch._C._pop_torch_function_stack())
    try:
        with _disable_current_modes():
            yield
    finally:
        for mode in reversed(function_modes):
            torch._C._push_on_torch_function_stack(mode)


def needs_helion(target: TargetLike) -> str | None:
    """Helion generates the kernel's Triton when compiling (not when serving): the build host
    needs it installed."""
    if importlib.util.find_spec("helion") is None:
        return "helion is not installed on this build host (pip install helion)"
    return None


def register_helion_impl(
    op: str, supports: SupportsFn, description: str
) -> Callable[[Callable], Callable]:
    """Register `body(run, *op_args)` as `op`'s helion implementation: eagerly with
    `run=run_helion`, in-graph (what lowering traces into an artifact) with
    `run=run_helion_in_graph`. `body` does the host-side reshapes and picks the config."""

    def both(target: TargetLike) -> str | None:
        return supports(target) or needs_helion(target)

    def wrap(body: Callable) -> Callable:
        eager, in_graph = bind_first(body, run_helion), bind_first(body, run_helion_in_graph)
        register_impl(
            op, "helion", both, description, in_graph=in_graph, body=body, body_takes="runner"
        )(eager)
        return eager

    return wrap


def helion_plain_source(fn: Callable, config: dict, args: tuple) -> PlainSource:
    """Plain Triton module source (no helion import) of `fn` specialized to `args`."""
    kernel = helion_kernel(fn, json.dumps(config, sort_keys=True), "codegen")
    helion = fn.__globals__["helion"]
    bound = kernel.bind(args)
    code = bound.to_triton_code(helion.Config(**config))
    plain = strip_helion_launcher(code)
    if plain is None:
        # The generated code needs more of helion.runtime than the launcher: use Helion's own
        # dependency-free export, which inlines a runtime shim.
        options = helion.OutputCodeOptions(allow_helion_deps=False)
        plain = bound.to_code(helion.Config(**config), options=options)
    return PlainSource(source=plain, entry=fn.__name__)


def strip_helion_launcher(code: str) -> str | None:
    """Swap Helion's launcher import for a plain one; None if other helion uses remain."""
    lines = code.splitlines()
    marker = "from helion.runtime import default_launcher as _default_launcher"
    if marker not in lines:
        return None
    index = lines.index(marker)
    lines[index : index + 1] = _PLAIN_LAUNCHER.strip("\n").splitlines()
    # Inductor's libdevice re-export costs a torch._inductor import; Triton's is the same.
    lines = [_IMPORT_SWAPS.get(line, line) for line in lines]
    plain = inline_triton_helpers("\n".join(lines) + "\n")
    return None if mentions_helion(plain) else plain


def inline_triton_helpers(code: str) -> str:
    """Paste Helion's small @triton.jit helper module (NaN-propagating max/min, ...) in place
    of its import, and call the helpers by their bare names."""
    if _HELPERS_IMPORT not in code:
        return code

    import helion.runtime.triton.helpers as helpers

    body = [
        line
        for line in inspect.getsource(helpers).splitlines()
        if not line.startswith(("from __future__", "import ", "from ", "__all__"))
    ]
    code = code.replace(_HELPERS_IMPORT, "\n".join(body).strip("\n") + "\n")
    return code.replace("helion_triton_helpers.", "")


def mentions_helion(source: str) -> bool:
    """True if the module imports helion or names it anywhere in code (comments don't count)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "helion" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "helion":
            return True
        if isinstance(node, ast.Name) and node.id == "helion":
            return True
    return False


def register_helion_kernel(
    name: str,
    fn: Callable,
    example_args: Callable,
    variants: tuple[str, ...] = ("default",),
    *,
    cases: Callable[[], tuple[KernelCase, ...]] | None = None,
    no_triton_interpreter: str = "",
) -> KernelSpec:
    """Register a Helion kernel for IR op `name` with the cross-compiler: its plain source is
    `fn` specialized to each variant's example args (the variant only picks the args).
    `cases` and `no_triton_interpreter`: see `KernelSpec`."""
    return register_kernel(
        KernelSpec(
            name=name,
            op=name,
            provider="helion",
            plain_source=lambda config, args, variant: helion_plain_source(fn, config, args),
            example_args=example_args,
            variants=variants,
            cases=cases,
            no_triton_interpreter=no_triton_interpreter,
        )
    )
