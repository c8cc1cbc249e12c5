"""AOTInductor artifacts: a `.pt2` package called through torch's C++ loader."""

from __future__ import annotations

from pathlib import Path

import torch

from runtime.loaders.compiled import CompiledLoader


class AOTILoader(CompiledLoader):
    def load_program(self, device: torch.device):
        return load_package(Path(self.artifact.path) / self.manifest["package"], device)


def load_package(path: Path, device: torch.device):
    """An AOTInductor `.pt2` package, callable with its flat inputs."""
    index = device.index if device.type == "cuda" and device.index is not None else -1
    loader_cls = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_cls is None:  # a torch without the C++ package loader binding
        from torch._inductor import aoti_load_package

        return aoti_load_package(str(path))
    # run_single_threaded: the container then skips its per-run CUDA events, whose queries
    # are illegal while a CUDA graph captures the call. The engine calls from one thread.
    return _BoxedPackage(loader_cls(str(path), "model", True, 1, index))


class _BoxedPackage:
    """The AOTInductor C++ loader called directly: `torch._inductor.aoti_load_package` would
    import Inductor and Dynamo (over a second) only to flatten arguments we pass flat."""

    def __init__(self, loader):
        self.loader = loader

    def __call__(self, *args):
        return self.loader.boxed_run(list(args))  # boxed_run consumes its list
