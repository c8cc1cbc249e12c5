"""A cache entry on disk: a directory of files plus `manifest.json` listing each file's checksum.

The store only records and checks bytes; what the files mean belongs to `lowering/` (which
writes them) and `runtime/` (which loads them).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20
# Files above one piece also record a sha256 per piece, so a load verifies them on every core
# at once (hashlib releases the GIL): one thread checks ~1.3 GB/s, and an fp8 8B artifact's
# derived weights are ~7 GB.
PIECE = 64 << 20

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


def _digests(path: Path) -> tuple[str, list[str]]:
    """(sha256 of the whole file, sha256 of each PIECE-sized piece) in one read."""
    whole, pieces = hashlib.sha256(), []
    with open(path, "rb") as f:
        while block := f.read(PIECE):
            whole.update(block)
            pieces.append(hashlib.sha256(block).hexdigest())
    return whole.hexdigest(), pieces


def _piece_matches(path: Path, piece: int, index: int, want: str) -> bool:
    with open(path, "rb") as f:
        f.seek(index * piece)
        digest, left = hashlib.sha256(), piece
        while left and (chunk := f.read(min(_CHUNK * 8, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest() == want


def _pieces_match(path: Path, piece: int, pieces: list[str]) -> bool:
    workers = min(len(pieces), os.cpu_count() or 1, 32)
    with ThreadPoolExecutor(workers) as pool:
        return all(pool.map(lambda ip: _piece_matches(path, piece, *ip), enumerate(pieces)))


def describe_files(root: Path) -> dict[str, dict[str, Any]]:
    """{relpath: {sha256, size[, piece, pieces]}} for every regular file under `root` (manifest
    excluded); `pieces` (a sha256 per `piece` bytes) only for files larger than one piece."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST_NAME or path.is_dir():
            continue
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"artifact file {rel} is not a regular file: write plain files only")
        whole, pieces = _digests(path)
        out[rel] = {"sha256": whole, "size": path.stat().st_size}
        if len(pieces) > 1:
            out[rel].update(piece=PIECE, pieces=pieces)
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
    piece, pieces = want.get("piece"), want.get("pieces")
    if isinstance(piece, int) and piece > 0 and pieces and len(pieces) == -(-size // piece):
        ok = _pieces_match(path, piece, pieces)
    else:  # small file, or an entry written before pieces existed
        ok = sha256_file(path) == want["sha256"]
    if not ok:
        return "sha256 mismatch (corrupted)"
    return None
