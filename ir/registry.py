"""The IR op registry and the dispatch table.

An IR op is defined once by its reference function: plain torch code that *is* the op's
spec. `@ir_op` turns it into `torch.ops.kiln.<name>` (a `torch.library.custom_op`, so it stays
one node in every traced graph) and records an `OpDef`. Faster implementations are registered
against the op with a provider name and a `supports(target) -> reason | None` predicate; which
one runs on a target is decided in one place, `choose()`, which also says why every other
candidate was rejected.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

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


@dataclass
class OpDef:
    """An IR op: its reference (the spec), its torch op, and its implementations."""

    name: str
    reference: Callable
    op: object  # the torch.library.Library holding the op's definition and kernels
    mutates: tuple[str, ...]
    doc: str
    impls: list[Impl] = field(default_factory=list)

    @property
    def overload(self) -> torch._ops.OpOverload:
        return getattr(getattr(torch.ops, NAMESPACE), self.name).default


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
) -> Callable[[Callable], OpDef]:
    """Define `torch.ops.kiln.<name>` from its reference function.

    The reference is the eager kernel on every device and, unless `fake` is given, the fake
    (meta) implementation too. Ops whose reference reads tensor values to decide shapes (paged
    attention walks block tables) pass a `fake` that only computes the output's shape.
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
        torch.library.register_fake(f"{NAMESPACE}::{name}", fake or reference, lib=lib)
        opdef = OpDef(
            name=name,
            reference=reference,
            op=lib,
            mutates=tuple(mutates_args),
            doc=(inspect.getdoc(reference) or "").split("\n")[0],
        )
        opdef.impls.append(Impl("reference", reference, lambda target: None, "plain-torch spec"))
        _OPS[name] = opdef
        return opdef

    return wrap


_LIB: list[torch.library.Library] = []
_BOUND: dict[tuple[str, str], str] = {}  # (op, dispatch key) -> provider bound by bind_device_impls


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
) -> Callable[[Callable], Callable]:
    """Register a faster implementation of `op_name`; its signature must equal the reference's
    (and so must `in_graph`'s, its traceable form; see `Impl`)."""

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
        opdef.impls.append(Impl(provider, fn, supports, description, in_graph))
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


def _load_builtin_ops() -> None:
    # Importing the packages registers every built-in op and host implementation once.
    import ir.impls  # noqa: F401
    import ir.ops  # noqa: F401


def bind_device_impls(
    target: TargetLike, providers: tuple[str, ...] = ("triton", "library")
) -> dict:
    """Make eager calls on `target`'s device run the chosen implementation of each op.

    Only providers in `providers` are bound (Helion kernels need Helion at run time, which the
    serve path must not import; they reach the device through lowering instead).
    Returns {op: provider} for what is bound.
    """
    chosen = {c.op: c.chosen.provider for c in dispatch_table(target) if c.chosen.provider in providers}  # fmt: skip
    bind_impls(chosen, target.device_type)
    key = "CUDA" if target.device_type == "cuda" else "CPU"
    return {op: _BOUND[(op, key)] for op in chosen if (op, key) in _BOUND}


def bind_impls(chosen: dict[str, str], device_type: str) -> dict[str, str]:
    """Bind recorded choices {op: provider} (an artifact's manifest) to the device's dispatch
    key, so the compiled graph's calls into IR ops run what the compile chose."""
    key = "CUDA" if device_type == "cuda" else "CPU"
    bound = {}
    for op, provider in chosen.items():
        impl = next((i for i in get_op(op).impls if i.provider == provider), None)
        if impl is None or provider == "reference" or (op, key) in _BOUND:
            continue  # a dispatch key takes one kernel per library
        get_op(op).op.impl(op, impl.fn, key)
        _BOUND[(op, key)] = bound[op] = provider
    return bound
