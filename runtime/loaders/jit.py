"""The GPU fallback kind: an exported program run under torch.compile at load; its code is
already in Kiln's Inductor cache (the compile ran it), but Dynamo traces it again."""

from __future__ import annotations

from pathlib import Path

import torch

from compile_cache.formats import jit_program
from runtime.loaders.compiled import CompiledLoader


class JitLoader(CompiledLoader):
    def load_program(self, device: torch.device):
        import torch.export

        program = torch.export.load(str(Path(self.artifact.path) / self.manifest["program"]))
        return jit_program(program, self.manifest["inputs"])

    def calls_ops(self) -> bool:
        return True  # every op not inlined stays a call (attention into the bound kernel)

    def compiles_per_shape(self) -> bool:
        return True  # torch.compile specialises sizes 0 and 1
