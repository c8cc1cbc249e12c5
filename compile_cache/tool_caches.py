"""Point Inductor's and Triton's own caches inside the Kiln cache root.

Both tools read their cache folder from the environment, so this must run before
`torch._inductor` or `triton` is imported (the CLI calls it first thing in `compile`/`serve`).
One persistent folder matters: a fresh Inductor cache pays ~9.5 s of compiler probing here.
"""

from __future__ import annotations

from pathlib import Path

from kiln import env

INDUCTOR_SUBDIR = "inductor"
TRITON_SUBDIR = "triton"


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
