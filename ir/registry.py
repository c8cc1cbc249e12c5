"""The IR op registry and the dispatch table.

An IR op is defined once by its reference function: plain torch code that *is* the op's
spec. `@ir_op` turns it into `torch.ops.kiln.<name>` (a `torch.library.custom_op`, so it stays
one node in every traced graph) and records an `OpDef`. Faster implementations are registered
against the op with a provider name and a `supports(target) -> reason | None` predicate; which
one runs on a target is decided in one place, `choose()`, which also says why every other
candidate was rejected.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ir.fake_memo import memoized

NAMESPACE = "kiln"

# Providers in order of preference: the first one whose `supports` accepts the target wins.
PROVIDER_ORDER = ("helion", "triton", "library", "native", "reference")


class TargetLike(Protocol):
    """What the dispatch table needs of a target (see `ir.targets.Target`)."""

    name: str
    device_type: str  # "cpu" | "cuda"
    arch: str | None  # "sm_90a", "sm_100a", None for cpu
    has_fp8: bool


SupportsFn = Callable[[TargetLike], "str | None"]


@dataclass(frozen=True)
class Impl:
    """One implementation of an IR op; `fn` has the reference's signature."""

    provider: str
    fn: Callable
    supports: SupportsFn
    description: str = ""
    # The same kernel in a form lowering can trace into the compiled graph (a Triton kernel
    # launched through `torch.library.wrap_triton`): the artifact then holds the kernel itself
    # instead of calling back into Python through the dispatcher. None: it stays a call.
    in_graph: Callable | None = None
    # Whether a CUDA graph can capture it: it never reads a device tensor on the host.
    capturable: bool = True
    # A kernel implementation's raw body `body(first, *op_args)`: `first` is the launcher
    # `(jit_fn, grid, *args, num_warps=, num_stages=)` for a Triton kernel, the runner
    # `(helion_fn, config, *args)` for a Helion kernel (`body_takes` says which). A caller binds
    # its own (`with_launcher`): a plan artifact's runtime launches precompiled cubins so.
    body: Callable | None = None
    body_takes: str = ""  # "launcher" | "runner"; "" when there is no body

    def with_launcher(self, first: Callable) -> Callable:
        """The body with its launcher (Triton) or runner (Helion) bound: `fn(*op_args)` (a
        partial: a plan runs it every step, and it costs no Python frame)."""
        if self.body is None:
            raise TypeError(f"the {self.provider} implementation has no launch body to bind")
        return functools.partial(self.body, first)


@dataclass
class OpDef:
    """An IR op: its reference (the spec), its torch op, and its implementations."""

    name: str
    reference: Callable
    op: object  # the torch.library.Library holding the op's definition and kernels
    mutates: tuple[str, ...]
    doc: str
    impls: list[Impl] = field(default_factory=list)
    # The reference reads device tensors on the host (`int(seq_lens[i])`): a CUDA graph cannot
    # capture it, so capture needs a capturable implementation (see `capturable_impl`).
    syncs_host: bool = False
    opaque: bool = False  # see `ir_op`
    # Small random arguments: every op is opchecked on them (tests/ir/test_ops.py).
    example: Callable[[], tuple] | None = None
    # For a fused op: the graph of unfused ops it replaces, as a function of its arguments
    # (tests/ir/test_fused_ops.py runs the fusion passes on it and compares).
    unfused: Callable | None = None

    @property
    def overload(self) -> torch._ops.OpOverload:
        return getattr(getattr(torch.ops, NAMESPACE), self.name).default

    @property
    def stays_call(self) -> bool:
        """Lowering keeps the op one call in the compiled graph instead of inlining its
        reference: it writes an input (a mutation cannot be decomposed after export), or its
        reference cannot be traced (host reads of tensor values, collectives)."""
        return bool(self.mutates) or self.opaque or self.syncs_host


@dataclass(frozen=True)
class Choice:
    op: str
    chosen: Impl
    rejected: tuple[tuple[str, str], ...]  # (provider, why)


_OPS: dict[str, OpDef] = {}


def ir_op(
    name: str,
    *,
    mutates_args: tuple[str, ...] = (),
    fake: Callable | None = None,
    syncs_host: bool = False,
    opaque: bool = False,
    example: Callable[[], tuple] | None = None,
    unfused: Callable | None = None,
) -> Callable[[Callable], OpDef]:
    """Define `torch.ops.kiln.<name>` from its reference function.

    The reference is the eager kernel on every device and, unless `fake` is given, the fake
    (meta) implementation too. Ops whose reference reads tensor values to decide shapes (paged
    attention walks block tables) pass a `fake` that only computes the output's shape and set
    `syncs_host`. `opaque`: the reference must not be traced into a compiled graph (it talks
    to other ranks). Both, and `mutates_args`, keep the op a call (`OpDef.stays_call`).
    `example()` returns small random arguments; a fused op gives `unfused`, the same
    computation written with the unfused ops it replaces (`torch.ops.kiln.*`).
    """

    def wrap(reference: Callable) -> OpDef:
        if name in _OPS:
            raise ValueError(f"IR op {name!r} is defined twice")
        # Defined through torch.library.Library rather than torch.library.custom_op: the latter
        # wraps every kernel in a dynamo-disable that imports torch._dynamo (over a second) on
        # the first call, which a warm start would pay inside its first token.
        schema = torch.library.infer_schema(reference, mutates_args=mutates_args)
        lib = _library()
        lib.define(f"{name}{schema}")
        lib.impl(name, reference, "CompositeExplicitAutograd")
        # Memoized per input description (ir/fake_memo.py); a mutating op's fake runs every time.
        fake_impl = fake or reference
        fake_impl = fake_impl if mutates_args else memoized(fake_impl)
        torch.library.register_fake(f"{NAMESPACE}::{name}", fake_impl, lib=lib)
        opdef = OpDef(
            name=name,
            reference=reference,
            op=lib,
            mutates=tuple(mutates_args),
            doc=(inspect.getdoc(reference) or "").split("\n")[0],
            syncs_host=syncs_host,
            opaque=opaque,
            example=example,
            unfused=unfused,
        )
        spec = Impl("reference", reference, lambda target: None, "plain-torch spec")
        opdef.impls.append(dataclasses.replace(spec, capturable=not syncs_host))
        _OPS[name] = opdef
        return opdef

    return wrap


_LIB: list[torch.library.Library] = []
_BOUND: dict[tuple[str, str], str] = {}  # (op, dispatch key) -> provider bound by bind_for


def _library() -> torch.library.Library:
    if not _LIB:
        _LIB.append(torch.library.Library(NAMESPACE, "DEF"))
    return _LIB[0]


def register_impl(
    op_name: str,
    provider: str,
    supports: SupportsFn,
    description: str = "",
    in_graph: Callable | None = None,
    capturable: bool = True,
    body: Callable | None = None,
    body_takes: str = "",
) -> Callable[[Callable], Callable]:
    """Register a faster implementation of `op_name`; its signature must equal the reference's
    (and so must `in_graph`'s, its traceable form; see `Impl`). `capturable=False` if it reads
    device tensors on the host (CUDA graphs then avoid it). A kernel passes its raw `body`
    (the reference's parameters after one launcher or runner, `body_takes` says which)."""

    def wrap(fn: Callable) -> Callable:
        opdef = get_op(op_name)
        if provider not in PROVIDER_ORDER:
            raise ValueError(f"unknown provider {provider!r}; known: {', '.join(PROVIDER_ORDER)}")
        ref_params = list(inspect.signature(opdef.reference).parameters)
        for f in (fn, in_graph) if in_graph is not None else (fn,):
            impl_params = list(inspect.signature(f).parameters)
            if ref_params != impl_params:
                raise TypeError(
                    f"{provider} implementation of kiln.{op_name} takes {impl_params}, "
                    f"but the reference takes {ref_params}"
                )
        if body is not None:
            body_params = list(inspect.signature(body).parameters)[1:]
            if body_params != ref_params or body_takes not in ("launcher", "runner"):
                raise TypeError(
                    f"{provider} body of kiln.{op_name} must take (launcher or runner, "
                    f"*{ref_params}) with body_takes 'launcher' or 'runner'; it takes "
                    f"{body_params} with body_takes {body_takes!r}"
                )
        impl = Impl(provider, fn, supports, description, in_graph, capturable, body, body_takes)
        opdef.impls.append(impl)
        return fn

    return wrap


def get_op(name: str) -> OpDef:
    _load_builtin_ops()
    try:
        return _OPS[name]
    except KeyError:
        raise KeyError(f"unknown IR op {name!r}; known ops: {', '.join(sorted(_OPS))}") from None


def all_ops() -> list[OpDef]:
    _load_builtin_ops()
    return [_OPS[n] for n in sorted(_OPS)]


def choose(op_name: str, target: TargetLike) -> Choice:
    """The dispatch table: the first provider (in PROVIDER_ORDER) that supports `target`."""
    opdef = get_op(op_name)
    ranked = sorted(opdef.impls, key=lambda i: PROVIDER_ORDER.index(i.provider))
    rejected: list[tuple[str, str]] = []
    for impl in ranked:
        why = impl.supports(target)
        if why is None:
            return Choice(op_name, impl, tuple(rejected))
        rejected.append((impl.provider, why))
    raise AssertionError(f"kiln.{op_name}: the reference implementation must support every target")


def dispatch_table(target: TargetLike) -> list[Choice]:
    return [choose(op.name, target) for op in all_ops()]


# Packages whose modules register into this registry when imported. They import the registry,
# not the other way round: it finds them by name, as a plugin host finds its plugins.
OP_PACKAGES = ("ir.ops", "ir.impls")
KERNEL_PACKAGES = ("ir.kernels",)


def _load_builtin_ops() -> None:
    """Import the op and host-implementation packages (once; each registers what it defines)."""
    for package in OP_PACKAGES:
        importlib.import_module(package)


# Providers whose kernels may run at serve time, per device type: Helion kernels need Helion
# at run time, which the serve path never imports (they reach a GPU through lowering instead).
SERVE_PROVIDERS = {"cpu": ("native",), "cuda": ("triton", "library")}


def bind_for(device_type: str, chosen: dict[str, str] | None = None) -> dict[str, str]:
    """Make eager calls of IR ops on `device_type` run registered implementations.

    `chosen` is {op: provider}: an artifact's recorded choices (the ops its package calls);
    None means the dispatch table's choices for this host's target (an engine running the
    model eagerly). Only `SERVE_PROVIDERS` are bound; kernel modules are imported only when a
    choice names a provider not registered yet (a warm CPU start never imports Triton).
    Returns {op: provider} for what is bound.
    """
    runnable = SERVE_PROVIDERS.get(device_type, ())
    if chosen is None:
        from ir.targets import get_target

        load_kernels()
        chosen = {c.op: c.chosen.provider for c in dispatch_table(get_target("auto"))}
    wanted = {op: p for op, p in chosen.items() if p in runnable}
    if any(_impl(op, p) is None for op, p in wanted.items()):
        load_kernels()
    key = "CUDA" if device_type == "cuda" else "CPU"
    bound = {}
    for op, provider in wanted.items():
        impl = _impl(op, provider)
        if impl is None:
            raise KeyError(f"no {provider} implementation of kiln.{op} is registered")
        if (op, key) not in _BOUND:  # a dispatch key takes one kernel per library
            get_op(op).op.impl(op, impl.fn, key)
            _BOUND[(op, key)] = provider
        bound[op] = _BOUND[(op, key)]
    return bound


def load_kernels() -> None:
    """Import every kernel module (`ir/kernels/`), registering their implementations."""
    for package in KERNEL_PACKAGES:
        importlib.import_module(package)


def _impl(op: str, provider: str) -> Impl | None:
    return next((i for i in get_op(op).impls if i.provider == provider), None)


CAPTURE_PROVIDERS = ("triton", "library")  # may stand in for a host-syncing op under capture


def capturable_impl(op: str) -> Impl | None:
    """The first registered implementation of `op` that a CUDA graph can capture and the
    serve path can run, or None."""
    load_kernels()
    ranked = sorted(get_op(op).impls, key=lambda i: PROVIDER_ORDER.index(i.provider))
    return next((i for i in ranked if i.capturable and i.provider in CAPTURE_PROVIDERS), None)


def uncapturable_ops() -> list[str]:
    """Ops whose reference syncs the host and that have no capturable implementation."""
    return [op.name for op in all_ops() if op.syncs_host and capturable_impl(op.name) is None]


def capture_routes(reenter: Callable[[Callable], Callable]) -> dict:
    """{op overload: stand-in} that make an eager forward capturable: an op whose reference
    syncs the host runs its capturable implementation; an op that stays a call without a
    capturable implementation runs its reference through `reenter(fn)` (the routing mode
    re-entered, so the ops its reference calls are routed too: `attention_quant` calls
    `attention`). Ops left out run as bound."""
    routes = {}
    for op in all_ops():
        impl = capturable_impl(op.name)
        if impl is not None and impl.provider != "reference" and (op.syncs_host or op.stays_call):
            routes[op.overload] = impl.fn
        elif op.syncs_host:
            raise KeyError(f"kiln.{op.name} syncs the host and has no capturable implementation")
        elif op.stays_call:
            routes[op.overload] = reenter(op.reference)
    return routes
