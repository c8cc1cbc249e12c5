"""Point Inductor's and Triton's own caches inside the Kiln cache root.

Both tools read their cache folder from the environment, so this must run before
`torch._inductor` or `triton` is imported (the CLI calls it first thing in `compile`/`serve`).
One persistent folder matters: a fresh Inductor cache pays ~9.5 s of compiler probing here.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from kiln import env

INDUCTOR_SUBDIR = "inductor"
TRITON_SUBDIR = "triton"
BYTECODE_SUBDIR = "pycache"


def default_root() -> Path:
    """The compile cache root: <Kiln cache dir>/compile."""
    return env.cache_dir() / "compile"


def configure_tool_caches(root: Path | None = None, *, override: bool = False) -> dict[str, Path]:
    """Set TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR to `root`/inductor and `root`/triton.

    A value the user exported is kept unless `override`. Returns {env name: folder in effect}.
    """
    root = Path(root) if root is not None else default_root()
    wanted = {
        env.INDUCTOR_CACHE_ENV: root / INDUCTOR_SUBDIR,
        env.TRITON_CACHE_ENV: root / TRITON_SUBDIR,
    }
    return {
        name: env.export_default(name, folder, override=override) for name, folder in wanted.items()
    }


def configure_bytecode_cache(root: Path | None = None, probe: str = "torch") -> Path | None:
    """Keep Python bytecode inside the Kiln cache when the interpreter could not otherwise
    reuse any for `probe`'s package: it has no cached bytecode and either bytecode writing is
    off (PYTHONDONTWRITEBYTECODE, common in container images) or its folder is read-only.

    Then every process compiles torch's ~2,000 modules from source: on an H200 image that
    ships no bytecode, `import torch` costs 3.9-4.9 s, 2.2 s of it in `compile()`. This sets `sys.pycache_prefix`
    to <root>/pycache, turns writing on for this process (site-packages is never written) and
    exports PYTHONPYCACHEPREFIX (and drops PYTHONDONTWRITEBYTECODE), so child processes
    (workers, `kiln bench startup`'s children) read and write the same bytecode. Returns the
    folder, or None when nothing changed: bytecode is already reusable, the user set their own
    PYTHONPYCACHEPREFIX, or KILN_BYTECODE_CACHE=0.
    Call before the heavy imports.
    """
    if not env.bytecode_cache_enabled():
        return None
    folder = (Path(root) if root is not None else default_root()) / BYTECODE_SUBDIR
    if sys.pycache_prefix is not None and Path(sys.pycache_prefix) != folder:
        return None  # the user's own prefix
    if sys.pycache_prefix is None:  # else inherited from a Kiln parent: keep it, and write
        spec = importlib.util.find_spec(probe)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        if Path(importlib.util.cache_from_source(spec.origin)).is_file():
            return None  # its own __pycache__ serves every start
        if not sys.dont_write_bytecode and os.access(Path(spec.origin).parent, os.W_OK):
            return None  # Python writes it there on this first import
    sys.pycache_prefix = str(folder)
    sys.dont_write_bytecode = False
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder)
    # Children write from their first import on: under a prefix Python reads bytecode only
    # from the prefix, so the modules a child imports before Kiln's code runs (site's, the
    # CLI's) would otherwise be compiled from source at every start (0.1-0.4 s measured).
    # With the prefix set, every write lands in it, never beside the sources.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    return folder
