"""A cache entry on disk: a directory of files plus `manifest.json` listing each file's checksum.

The store only records and checks bytes; what the files mean belongs to `lowering/` (which
writes them) and `runtime/` (which loads them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20

# Manifest fields the store owns; a builder's manifest dict may not set them.
RESERVED_FIELDS = ("key", "factors", "files", "created", "build_seconds", "build_id")


@dataclass(frozen=True)
class Artifact:
    """A verified cache entry: its directory and its parsed manifest."""

    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def factors(self) -> dict[str, Any]:
        """The key factors the entry was built for."""
        return self.manifest["factors"]

    @property
    def size(self) -> int:
        """Bytes of all listed files (the manifest itself excluded)."""
        return sum(f["size"] for f in self.manifest["files"].values())

    def label(self, name: str) -> str:
        """Short name of the entry's `model` or `target` (see `label`)."""
        return label(self.manifest, name)

    def file(self, relpath: str) -> Path:
        """Path of one listed file; a name the manifest does not list is a caller bug."""
        if relpath not in self.manifest["files"]:
            raise KeyError(f"artifact {self.key[:12]} has no file {relpath!r}")
        return self.path / relpath


@dataclass(frozen=True)
class Problem:
    """One defect found in a cache entry, naming the file and what is wrong with it."""

    key: str
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key[:12]}: {self.file}: {self.reason}"


def label(manifest: dict[str, Any], name: str) -> str:
    """A short name for listings: the manifest's field, else the key factor of that name,
    as a str or a dict's "name"; "-" when neither says."""
    for value in (manifest.get(name), manifest.get("factors", {}).get(name)):
        if isinstance(value, dict):
            value = value.get("name")
        if isinstance(value, str) and value:
            return value
    return "-"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(root: Path) -> dict[str, dict[str, Any]]:
    """{relpath: {sha256, size}} for every regular file under `root` (manifest excluded)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST_NAME or path.is_dir():
            continue
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"artifact file {rel} is not a regular file: write plain files only")
        out[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def read_manifest(entry: Path) -> dict[str, Any]:
    """Parse `manifest.json`; raises OSError or ValueError when it is missing or damaged."""
    manifest = json.loads((entry / MANIFEST_NAME).read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError("manifest has no 'files' table")
    return manifest


def check_entry(key: str, entry: Path) -> tuple[dict[str, Any] | None, list[Problem]]:
    """(manifest, problems) of one entry directory: size first (cheap), then sha256."""
    try:
        manifest = read_manifest(entry)
    except (OSError, ValueError) as e:
        return None, [Problem(key, MANIFEST_NAME, f"unreadable ({e})")]
    problems = []
    if manifest.get("key") != key:
        problems.append(Problem(key, MANIFEST_NAME, f"names key {manifest.get('key')!r}"))
    for rel, want in manifest["files"].items():
        problem = _check_file(entry / rel, want)
        if problem:
            problems.append(Problem(key, rel, problem))
    return manifest, problems


def _check_file(path: Path, want: dict[str, Any]) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != want["size"]:
        return f"size {size} bytes, manifest says {want['size']} (truncated or overwritten)"
    if sha256_file(path) != want["sha256"]:
        return "sha256 mismatch (corrupted)"
    return None
