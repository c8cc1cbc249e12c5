"""`kiln cache`: list, explain, verify, evict and remove compile cache entries."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache", help="inspect and manage the compile cache", description=__doc__
    )
    _add_cache_dir(parser, None)
    verbs = parser.add_subparsers(dest="cache_command", required=True, metavar="VERB")

    ls = verbs.add_parser("ls", help="list entries, most recently used first")
    ls.add_argument("--json", action="store_true", help="print a JSON list")

    explain = verbs.add_parser("explain", help="print the key factors of an entry")
    explain.add_argument("key", metavar="KEY", help="a key or unique key prefix")
    explain.add_argument("--vs", metavar="KEY2", help="print only the factors that differ")

    verify = verbs.add_parser("verify", help="check every file's size and sha256")
    verify.add_argument("--repair", action="store_true", help="remove damaged entries")

    gc = verbs.add_parser("gc", help="evict least-recently-used entries down to a size")
    gc.add_argument("--max-size", required=True, metavar="SIZE", help="e.g. 500M, 2G or bytes")

    rm = verbs.add_parser("rm", help="remove entries")
    rm.add_argument("keys", nargs="+", metavar="KEY", help="keys or unique key prefixes")

    for verb in verbs.choices.values():
        _add_cache_dir(verb, argparse.SUPPRESS)  # also accepted after the verb
    parser.set_defaults(run=run)


def _add_cache_dir(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default,
        metavar="DIR",
        help="Kiln cache folder (overrides KILN_CACHE_DIR); entries live in DIR/compile",
    )


def run(args: argparse.Namespace) -> int:
    from compile_cache import Store

    root = args.cache_dir / "compile" if args.cache_dir else None
    store = Store(root)
    try:
        return _VERB_RUNNERS[args.cache_command](store, args)
    finally:
        store.close()


def _ls(store, args) -> int:
    from compile_cache import format_size

    entries = store.ls()
    if args.json:
        rows = [
            {**vars(e), "created": _iso(e.created), "last_used": _iso(e.last_used)} for e in entries
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not entries:
        print(f"no entries in {store.root}")
        return 0
    rows = [("KEY", "MODEL", "TARGET", "SIZE", "CREATED", "LAST USED")]
    rows += [
        (e.key[:12], e.model, e.target, format_size(e.size), _when(e.created), _when(e.last_used))
        for e in entries
    ]
    _print_table(rows)
    total = format_size(sum(e.size for e in entries))
    print(f"{_count(len(entries), 'entry')}, {total} in {store.root}")
    return 0


def _explain(store, args) -> int:
    from compile_cache import diff_factors, flatten_factors, format_size

    entry = store.peek(args.key)
    if args.vs:
        other = store.peek(args.vs)
        diffs = diff_factors(entry.factors, other.factors)
        noun = "factor differs" if len(diffs) == 1 else "factors differ"
        print(f"{entry.key[:12]} vs {other.key[:12]}: {len(diffs)} {noun}")
        for path, a, b in diffs:
            print(f"  {path}: {_show(a)} -> {_show(b)}")
        return 0
    m = entry.manifest
    print(f"key      {entry.key}")
    print(f"model    {entry.label('model')}   target {entry.label('target')}")
    print(
        f"created  {_when(m.get('created', 0))}   size {format_size(entry.size)}"
        f"   build {m.get('build_seconds', 0):.1f} s"
    )
    print("factors:")
    for path, value in flatten_factors(entry.factors):
        print(f"  {path} = {_show(value)}")
    return 0


def _verify(store, args) -> int:
    problems = store.verify(repair=args.repair)
    for problem in problems:
        print(f"damaged: {problem}")
    if problems:
        action = "removed" if args.repair else "run `kiln cache verify --repair` to remove"
        print(f"{_count(len(problems), 'problem')} found ({action})")
        return 1
    print(f"ok: {_count(len(store.keys()), 'entry')} verified in {store.root}")
    return 0


def _gc(store, args) -> int:
    from compile_cache import format_size, parse_size

    limit = parse_size(args.max_size)
    before = store.total_size()
    removed = store.gc(limit)
    after = store.total_size()
    print(
        f"removed {_count(len(removed), 'entry')} ({format_size(before - after)} freed); "
        f"cache now {format_size(after)} (limit {format_size(limit)})"
    )
    return 0


def _rm(store, args) -> int:
    keys = [store.resolve(k) for k in args.keys]  # all-or-nothing: check every key first
    for key in keys:
        store.rm(key)
        print(f"removed {key}")
    return 0


_VERB_RUNNERS = {"ls": _ls, "explain": _explain, "verify": _verify, "gc": _gc, "rm": _rm}


def _show(value: Any) -> str:
    from compile_cache import MISSING

    return "<absent>" if value is MISSING else json.dumps(value, sort_keys=True)


def _count(n: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {noun if n == 1 else plural}"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else "-"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
