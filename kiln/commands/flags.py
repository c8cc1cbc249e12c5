"""Command-line flags derived from `kiln.config.EngineConfig`: one flag per field, its default,
type, choices and help taken from the field, so the CLI cannot drift from the engine."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import MISSING, Field, fields

from kiln.config import EngineConfig

_TYPES = {"int": int, "float": float, "str": str}


def engine_fields(names: Iterable[str] | None = None) -> list[Field]:
    """EngineConfig's fields that are flags (all but `model`, a positional), or just `names`."""
    wanted = set(names) if names is not None else None
    return [
        f
        for f in fields(EngineConfig)
        if f.name != "model" and (wanted is None or f.name in wanted)
    ]


def add_engine_arguments(p: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add a flag for each engine field (or each of `names`): `--max-num-seqs N`, ..."""
    for f in engine_fields(names):
        assert f.default is not MISSING, f"EngineConfig.{f.name} needs a default to be a flag"
        meta = f.metadata
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            negate = meta.get("negate")
            action = "store_false" if negate else "store_true"
            p.add_argument(negate or flag, dest=f.name, action=action, help=meta["help"])
            continue
        kind = _size if meta.get("size") else _TYPES[f.type.split(" | ")[0]]
        shown = "" if f.default is None else f" (default: {_show(f.default)})"
        p.add_argument(flag, type=kind, default=f.default, choices=meta.get("choices"),
                       metavar=meta.get("metavar"), help=meta["help"] + shown)  # fmt: skip


def engine_kwargs(args: argparse.Namespace, names: Iterable[str] | None = None) -> dict:
    """The EngineConfig keyword arguments the parsed flags give."""
    return {f.name: getattr(args, f.name) for f in engine_fields(names)}


def _show(value) -> str:
    if isinstance(value, int) and value >= 2**20 and value % 2**20 == 0:
        return f"{value // 2**20}M"
    return str(value)


def _size(text: str) -> int:
    """'512M', '2G', '1024' -> bytes; argparse reports a bad one as a usage error."""
    from compile_cache.sizes import parse_size
    from kiln.errors import KilnError

    try:
        return parse_size(text)
    except KilnError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
