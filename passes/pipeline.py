"""The pass pipeline: phases in order, the passes registered in each, and `--passes` parsing.

A pass registers itself: `@register_pass` on its class in `passes/<verb>.py`, with its
`phase` and `default_on` class attributes. Every module in this folder except the machinery
below (`MACHINERY`) is imported to find them, so adding a pass edits no other file. Within a
phase passes run in name order and must not depend on each other; a pass that needs another's
output belongs to a later phase.
"""

from __future__ import annotations

import importlib
import pkgutil

from kiln.errors import KilnError
from passes.base import Pass
from passes.config import PassToggles

PHASES = (
    "cleanup",  # drop no-op views, copies and dead code
    "fusions",  # pattern fusions over IR ops
    "quantize",  # --quantization fp8: linears -> quant_fp8 + scaled_mm
    "quant_fusions",  # fold quant_fp8 into the op that produces its input
    "collectives",  # tensor parallel: fuse all_reduce with its neighbours
    "padding",  # zero-pad sizes for kernels, bucket the token count
)
MACHINERY = frozenset(
    {"base", "capture", "capture_layers", "compile", "config", "graph", "interactions",
     "manager", "numerics", "pattern", "pipeline"}
)  # fmt: skip

_REGISTERED: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: add a pass to the pipeline, in its `phase`."""
    if cls.phase not in PHASES:
        raise ValueError(
            f"{cls.__name__}.phase={cls.phase!r} is not a phase; use one of {', '.join(PHASES)}"
        )
    known = _REGISTERED.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"pass name {cls.name!r} is registered twice ({known}, {cls})")
    _REGISTERED[cls.name] = cls
    return cls


def registered_passes() -> list[type[Pass]]:
    """Every registered pass class, in pipeline order (phase, then name)."""
    import passes

    for module in pkgutil.iter_modules(passes.__path__):
        if module.name not in MACHINERY:
            importlib.import_module(f"passes.{module.name}")
    return sorted(_REGISTERED.values(), key=lambda c: (PHASES.index(c.phase), c.name))


def default_pipeline() -> list[Pass]:
    return [cls() for cls in registered_passes()]


def pass_names(pipeline: list[Pass] | None = None) -> list[str]:
    return [p.name for p in (pipeline or default_pipeline())]


def parse_toggles(text: str | None, pipeline: list[Pass] | None = None) -> PassToggles:
    """`none`, `-name`, `+name` (or `name`), comma separated, applied left to right.

    `none` turns every optional pass off; `+name` turns one on (also one that is off by
    default), `-name` off. A pass that is not optional (quantize_fp8: it is what
    --quantization asks for) cannot be turned off.
    """
    pipeline = pipeline or default_pipeline()
    by_name = {p.name: p for p in pipeline}
    all_off, on, off = False, set(), set()
    for item in (t.strip() for t in (text or "").split(",")):
        if not item:
            continue
        if item in ("none", "all"):
            all_off, on, off = item == "none", set(), set()
            continue
        sign, name = (item[0], item[1:]) if item[0] in "+-" else ("+", item)
        if name not in by_name:
            raise KilnError(
                f"unknown pass {name!r} in --passes {text!r}; valid passes: "
                f"{', '.join(by_name)} (or 'none')"
            )
        if sign == "-" and not by_name[name].optional:
            raise KilnError(f"pass {name!r} is required by the chosen options and cannot be off")
        (on if sign == "+" else off).add(name)
        (off if sign == "+" else on).discard(name)
    return PassToggles(all_off, frozenset(on), frozenset(off))
