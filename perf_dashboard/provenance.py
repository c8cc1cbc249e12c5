"""Where a record came from: package versions and git commit, without importing torch.

`kiln compile` and `kiln bench` fill `versions` and `git_commit` with these so a trend jump can
be traced to an upgrade or a commit. Versions come from package metadata, so asking costs no
heavy import (`import torch` alone is ~1.6 s on the CI machines).
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("kiln", "torch", "triton", "helion", "transformers")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed version of each package that is installed (missing ones are left out)."""
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_commit(repo: Path | None = None) -> str | None:
    """The commit checked out in `repo` (default: this source tree), "+dirty" if modified.

    None when this is not a git checkout or git is missing: an installed wheel has no commit.
    """
    where = repo or Path(__file__).resolve().parent.parent
    try:
        head = _git(where, "rev-parse", "HEAD")
        dirty = _git(where, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if not head:
        return None
    return f"{head}+dirty" if dirty else head


def _git(where: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=5, check=True
    )
    return done.stdout.strip()
