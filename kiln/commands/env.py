"""`kiln env`: every environment variable Kiln reads, with its type, default, value and help."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("env", help="list the KILN_* environment variables and their values")
    p.add_argument("--json", action="store_true", help="one JSON object per variable")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from kiln.env import SETTINGS

    for s in SETTINGS.values():
        value = s.get()  # a bad value fails here, naming the variable
        if args.json:
            row = {"name": s.name, "type": s.kind, "default": _text(s.default),
                   "value": _text(value), "set": s.raw() is not None, "help": s.help}  # fmt: skip
            print(json.dumps(row))
            continue
        kind = f"{s.kind}: {'|'.join(s.choices)}" if s.choices else s.kind
        origin = "set" if s.raw() is not None else "default"
        print(f"{s.name:<22} {kind:<17} {_text(value) or '-':<24} ({origin})")
        print(f"{'':<22} {s.help}")
    return 0


def _text(value) -> str | None:
    if isinstance(value, bool):
        return "1" if value else "0"
    return None if value is None else str(value)
