"""Reading an artifact on the runtime side: the folder, the host check, and its loader.

The loader is chosen by the manifest's `lowering` field (see `compile_cache.formats`); each
kind has one implementation. Nothing here compiles or imports the compiler.
"""

from __future__ import annotations

import json
from pathlib import Path

from compile_cache import Artifact
from compile_cache.formats import AOTI, AOTI_PIECEWISE, INDUCTOR_JIT, PLAN
from kiln.errors import KilnError
from runtime.loaders.aoti import AOTILoader
from runtime.loaders.base import Forward, Loader
from runtime.loaders.compiled import CompiledLoader
from runtime.loaders.eager import EagerLoader
from runtime.loaders.jit import JitLoader
from runtime.loaders.piecewise import PiecewiseLoader
from runtime.loaders.plan import PlanLoader

LOADERS: dict[str, type[CompiledLoader]] = {
    AOTI: AOTILoader,
    AOTI_PIECEWISE: PiecewiseLoader,
    INDUCTOR_JIT: JitLoader,
    PLAN: PlanLoader,
}

__all__ = ["LOADERS", "EagerLoader", "Forward", "Loader", "loader_for", "read_artifact"]


def read_artifact(folder: Path) -> Artifact:
    """An artifact folder given by path (`--artifact`), outside the cache's lookup."""
    manifest_file = folder / "manifest.json"
    if not manifest_file.is_file():
        raise KilnError(f"{folder} is not a Kiln artifact (no manifest.json)")
    manifest = json.loads(manifest_file.read_text())
    return Artifact(manifest["key"], folder, manifest)


def loader_for(artifact: Artifact) -> CompiledLoader:
    """The loader of the artifact's kind, once the artifact is known to run on this host."""
    man = artifact.manifest
    kind = man.get("lowering")
    if kind not in LOADERS:
        raise KilnError(
            f"artifact {artifact.key[:12]} has lowering {kind!r}, which this runtime cannot "
            f"load (it loads {', '.join(LOADERS)}); recompile it with `kiln compile`"
        )
    host_check(man)
    return LOADERS[kind](artifact)


def host_check(manifest: dict) -> None:
    """Refuse an artifact built for another GPU, naming both."""
    import torch

    tgt = manifest.get("target", {})
    if tgt.get("device_type") != "cuda":
        return
    if not torch.cuda.is_available():
        raise KilnError(
            f"artifact targets {tgt.get('name')} ({tgt.get('arch')}), but this host has no GPU"
        )
    major, minor = torch.cuda.get_device_capability()
    host = f"sm_{major}{minor}"
    if not str(tgt.get("arch", "")).startswith(host):
        raise KilnError(
            f"artifact targets {tgt.get('name')} ({tgt.get('arch')}), but this GPU is "
            f"{torch.cuda.get_device_name()} ({host}); compile with --target auto on this host"
        )
