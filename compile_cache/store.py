"""The content-addressed store: one verified directory per key, built once across processes.

Layout under the root (default <Kiln cache dir>/compile):
    artifacts/<key>/    manifest.json + the builder's files (the source of truth)
    staging/<key>.*/    a build in progress; renamed into artifacts/ when complete
    trash/              entries being deleted (renamed out first, so readers never see half)
    locks/<key>.lock    flock per key
    aliases/<name>.json another name for a key ({"key": ..., plus the caller's fields}): a
                        cheap pre-key that leads to a content key; dangling ones read as misses
    hashes/             memoized digests (code, weight files) keyed by their files' stat
    index/              diskcache Index: key -> {model, target, size, created, last_used}
    inductor/, triton/  the tools' own caches (see `configure_tool_caches`)

The index is a summary for `ls` and LRU eviction; it is rebuilt from manifests when it
disagrees with `artifacts/`. Nothing here knows how an artifact is produced.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compile_cache.artifact import (
    MANIFEST_NAME,
    RESERVED_FIELDS,
    Artifact,
    Problem,
    check_entry,
    describe_files,
    label,
    read_manifest,
)
from compile_cache.key import KeyFactors, compute_key, diff_factors, normalize_factors
from compile_cache.locks import key_lock, try_key_lock
from compile_cache.tool_caches import default_root
from kiln.errors import KilnError

log = logging.getLogger(__name__)

Builder = Callable[[Path], dict[str, Any]]
"""Writes an artifact's files into the given empty folder and returns its manifest fields."""


@dataclass(frozen=True)
class Entry:
    """One row of `ls`: what an entry is for, how big, and when it was made and last used."""

    key: str
    model: str
    target: str
    size: int
    created: float
    last_used: float


class Store:
    """A compile cache rooted at one folder; safe to share between processes."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.artifacts_dir = self.root / "artifacts"
        self.staging_dir = self.root / "staging"
        self.trash_dir = self.root / "trash"
        self.locks_dir = self.root / "locks"
        self.aliases_dir = self.root / "aliases"
        self.memo_dir = self.root / "hashes"
        self._index = None

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- lookups and builds ------------------------------------------------------------------

    def get(self, key: str, verify: bool = True) -> Artifact | None:
        """The entry for `key`, or None on a miss. With `verify`, every file's size and sha256
        is checked; a damaged entry is logged (naming the file), removed, and reads as a miss."""
        return self._lookup(key, verify, locked=False)

    def get_or_build(self, key: str, factors: KeyFactors, build: Builder) -> tuple[Artifact, bool]:
        """(artifact, built): the cached entry, or build it under the key's inter-process lock.

        A second process asking for the same key waits for the lock, then finds the entry.
        If `build` raises, nothing is left behind and the exception propagates.
        """
        factors = normalize_factors(factors)
        if compute_key(factors) != key:
            raise ValueError(f"key {key[:12]} is not compute_key(factors): pass both from one call")
        hit = self.get(key)
        if hit is not None:
            return hit, False
        with key_lock(self.locks_dir, key):
            hit = self._lookup(key, verify=True, locked=True)
            if hit is not None:
                return hit, False
            return self._build(key, factors, build), True

    def peek(self, key_or_prefix: str) -> Artifact:
        """The entry for a key or unique key prefix, manifest read but files not verified."""
        key = self.resolve(key_or_prefix)
        try:
            return Artifact(key, self._entry_dir(key), read_manifest(self._entry_dir(key)))
        except (OSError, ValueError) as e:
            raise KilnError(f"cache entry {key[:12]} has a damaged manifest ({e})") from e

    def _lookup(self, key: str, verify: bool, locked: bool) -> Artifact | None:
        entry = self._entry_dir(key)
        if not entry.is_dir():
            return None
        if verify:
            manifest, problems = check_entry(key, entry)
        else:
            manifest, problems = self._manifest_or_problem(key, entry)
        if problems:
            for problem in problems:
                log.warning("compile cache: %s; removing the entry to rebuild it", problem)
            self._discard(key, manifest, locked)
            return None
        self._touch(key, manifest)
        return Artifact(key, entry, manifest)

    def _build(self, key: str, factors: KeyFactors, build: Builder) -> Artifact:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.staging_dir))
        try:
            start = time.perf_counter()
            fields = build(staging)
            seconds = time.perf_counter() - start
            manifest = _manifest(key, factors, fields, staging, seconds)
            text = json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False)
            (staging / MANIFEST_NAME).write_text(text, encoding="utf-8")
            final = self._entry_dir(key)
            if final.exists():  # an unreadable leftover; we hold the lock, so it is stale
                self._remove_entry(key)
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final)  # atomic: readers see no entry or a whole one
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._index_put(key, _record(manifest))
        log.info("compile cache: stored %s (%.1f s build)", key[:12], seconds)
        return Artifact(key, final, manifest)

    # -- aliases: other names for a key ----------------------------------------------------------

    def alias(self, name: str) -> dict[str, Any] | None:
        """The record filed under alias `name` ({"key": ..., ...}), or None."""
        try:
            record = json.loads((self.aliases_dir / f"{_checked(name)}.json").read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("key"), str) else None

    def set_alias(self, name: str, key: str, **fields: Any) -> None:
        """File `key` (plus JSON-shaped `fields`) under alias `name`, replacing any older one."""
        self.aliases_dir.mkdir(parents=True, exist_ok=True)
        path = self.aliases_dir / f"{_checked(name)}.json"
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps({**fields, "key": key}, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)  # atomic: readers see the old record or the new one

    # -- facts measured while loading an entry ------------------------------------------------

    def measurement(self, key: str, name: str) -> Any:
        """What `record_measurement` kept for this entry under `name`, or None."""
        try:
            record = self.index.get(key)
        except (OSError, sqlite3.Error):
            return None
        return (record or {}).get("measured", {}).get(name)

    def record_measurement(self, key: str, name: str, value: Any) -> None:
        """Keep a fact about an entry that only a load can learn (say, the activation peak of
        its warm-up step on one kind of GPU), so later loads can skip measuring it. It lives in
        the entry's index row: it goes with the entry, and is measured again after the index
        is rebuilt. Entries not in this store (an artifact run from a path) keep nothing."""
        try:
            record = self.index.get(key)
            if record is None:
                return
            measured = {**record.get("measured", {}), name: value}
            self.index[key] = {**record, "measured": measured}
        except (OSError, sqlite3.Error) as e:  # a read-only cache measures again next time
            log.debug("compile cache: measurement %s of %s not kept: %s", name, key[:12], e)

    # -- listing and maintenance -------------------------------------------------------------

    def ls(self) -> list[Entry]:
        """Every entry, most recently used first."""
        records = self._sync_index()
        entries = [Entry(key=k, **{f: r[f] for f in _ENTRY_FIELDS}) for k, r in records.items()]
        return sorted(entries, key=lambda e: e.last_used, reverse=True)

    def total_size(self) -> int:
        """Bytes of all entries' files (the tools' own caches not included)."""
        return sum(r["size"] for r in self._sync_index().values())

    def keys(self) -> list[str]:
        """Keys of the entries on disk."""
        if not self.artifacts_dir.is_dir():
            return []
        return sorted(p.name for p in self.artifacts_dir.iterdir() if p.is_dir())

    def resolve(self, key_or_prefix: str) -> str:
        """The full key for a key or unique prefix; a clear KilnError otherwise."""
        prefix = key_or_prefix.strip().lower()
        matches = [k for k in self.keys() if prefix and k.startswith(prefix)]
        if not matches:
            raise KilnError(
                f"no compile cache entry with key {key_or_prefix!r} in {self.root} "
                "(`kiln cache ls` lists the keys)"
            )
        if len(matches) > 1:
            shown = ", ".join(k[:16] for k in matches[:5])
            raise KilnError(
                f"key prefix {key_or_prefix!r} matches {len(matches)} entries ({shown}): "
                "give more characters"
            )
        return matches[0]

    def rm(self, key_or_prefix: str) -> str:
        """Remove one entry (full key or unique prefix); returns its full key."""
        key = self.resolve(key_or_prefix)
        self._remove_entry(key)
        return key

    def verify(self, repair: bool = False) -> list[Problem]:
        """Check every entry's files; with `repair`, remove the damaged ones."""
        problems = []
        for key in self.keys():
            _, found = check_entry(key, self._entry_dir(key))
            problems += found
            if found and repair:
                self._remove_entry(key)
        return problems

    def gc(self, max_size_bytes: int) -> list[str]:
        """Evict least-recently-used entries until the total is at most `max_size_bytes`.

        Entries being built by another process are skipped. Returns the removed keys.
        """
        if max_size_bytes < 0:
            raise ValueError(f"max_size_bytes={max_size_bytes}: give a size of 0 or more")
        self._clean_leftovers()
        entries = sorted(self.ls(), key=lambda e: e.last_used)
        total = sum(e.size for e in entries)
        removed = []
        for entry in entries:
            if total <= max_size_bytes:
                break
            with try_key_lock(self.locks_dir, entry.key) as free:
                if not free:
                    continue
                self._remove_entry(entry.key)
            total -= entry.size
            removed.append(entry.key)
        return removed

    def closest(self, factors: KeyFactors) -> tuple[str, list[tuple[str, Any, Any]]] | None:
        """(key, diffs) of the entry whose factors differ from `factors` in fewest paths.

        Each diff is (path, cached value, requested value); None when the store is empty.
        """
        best = None
        for key in self.keys():
            manifest, problems = self._manifest_or_problem(key, self._entry_dir(key))
            if problems:
                continue
            diffs = diff_factors(manifest.get("factors", {}), factors)
            if best is None or len(diffs) < len(best[1]):
                best = (key, diffs)
        return best

    # -- internals ---------------------------------------------------------------------------

    @property
    def index(self):
        """The diskcache Index, opened on first use (diskcache imports only then)."""
        if self._index is None:
            from diskcache import Index

            self._index = Index(str(self.root / "index"))
        return self._index

    def close(self) -> None:
        """Close the index's database connection (reopened on next use)."""
        if self._index is not None:
            self._index.cache.close()
            self._index = None

    def _entry_dir(self, key: str) -> Path:
        return self.artifacts_dir / _checked(key)

    @staticmethod
    def _manifest_or_problem(key: str, entry: Path) -> tuple[dict | None, list[Problem]]:
        try:
            return read_manifest(entry), []
        except (OSError, ValueError) as e:
            return None, [Problem(key, MANIFEST_NAME, f"unreadable ({e})")]

    def _discard(self, key: str, seen: dict | None, locked: bool) -> None:
        """Remove a damaged entry, unless another process replaced it since we looked."""
        if locked:
            self._remove_entry(key)
            return
        with key_lock(self.locks_dir, key):
            now, _ = self._manifest_or_problem(key, self._entry_dir(key))
            if (now or {}).get("build_id") == (seen or {}).get("build_id"):
                self._remove_entry(key)

    def _remove_entry(self, key: str) -> None:
        self.trash_dir.mkdir(parents=True, exist_ok=True)
        doomed = self.trash_dir / f"{key}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self._entry_dir(key), doomed)
        except FileNotFoundError:
            pass  # someone else removed it first
        shutil.rmtree(doomed, ignore_errors=True)
        self.index.pop(key, None)

    def _clean_leftovers(self) -> None:
        """Delete trash and the staging folders of builds that died (their key is unlocked)."""
        # Empty trash/ but keep the folder: a concurrent `_remove_entry` renames into it.
        for doomed in _children(self.trash_dir):
            shutil.rmtree(doomed, ignore_errors=True)
        for staging in _children(self.staging_dir):
            with try_key_lock(self.locks_dir, staging.name.split(".")[0]) as free:
                if free:
                    shutil.rmtree(staging, ignore_errors=True)

    def _touch(self, key: str, manifest: dict) -> None:
        try:  # a read-only cache still serves hits
            record = self.index.get(key) or _record(manifest)
            self.index[key] = {**record, "last_used": time.time()}
        except (OSError, sqlite3.Error) as e:
            log.debug("compile cache: last use of %s not recorded: %s", key[:12], e)

    def _index_put(self, key: str, record: dict) -> None:
        self.index[key] = record

    def _sync_index(self) -> dict[str, dict]:
        """Index records for exactly the entries on disk (missing rows rebuilt from manifests)."""
        on_disk = set(self.keys())
        records = {}
        for key in list(self.index.keys()):
            record = self.index.get(key) if key in on_disk else None
            if record is not None:
                records[key] = record
            else:
                self.index.pop(key, None)
        for key in on_disk - set(records):
            manifest, problems = self._manifest_or_problem(key, self._entry_dir(key))
            records[key] = _record(manifest or {"created": 0.0, "files": {}, "factors": {}})
            self._index_put(key, records[key])
        return records


def _manifest(key: str, factors: KeyFactors, fields: Any, staging: Path, seconds: float) -> dict:
    if not isinstance(fields, dict):
        raise TypeError(f"the builder returned {type(fields).__name__}: return a manifest dict")
    clash = sorted(set(fields) & set(RESERVED_FIELDS))
    if clash:
        raise ValueError(f"builder manifest sets store-owned fields {clash}: rename them")
    if (staging / MANIFEST_NAME).exists():
        raise ValueError(f"the builder wrote {MANIFEST_NAME}: the store owns it; return the fields")
    return {
        **fields,
        "key": key,
        "factors": factors,
        "files": describe_files(staging),
        "created": time.time(),
        "build_seconds": round(seconds, 3),
        "build_id": uuid.uuid4().hex,
    }


_ENTRY_FIELDS = ("model", "target", "size", "created", "last_used")


def _record(manifest: dict) -> dict:
    """The index row for a manifest (see `Entry`)."""
    created = float(manifest.get("created", 0.0))
    return {
        "model": label(manifest, "model"),
        "target": label(manifest, "target"),
        "size": sum(f.get("size", 0) for f in manifest.get("files", {}).values()),
        "created": created,
        "last_used": created,
    }


def _checked(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad cache key or alias {name!r}: use compute_key(factors)")
    return name


def _children(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []
