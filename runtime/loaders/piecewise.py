"""Running a piecewise artifact: one AOTInductor package per distinct piece, called in order.

The manifest's `plan` lists the step's pieces (prologue, each decoder layer, epilogue), which
package each calls, and where every argument comes from: a weight, a step input (KV caches
included) or a value an earlier piece returned (the residual stream). Every layer of one
structure calls the same loaded package with its own weights and KV cache. The runner's CUDA
graph capture wraps the whole call, so the Python loop over pieces costs nothing on replay.
Imports no compiler: packages load through AOTInductor's C++ loader.
"""

from __future__ import annotations

from pathlib import Path

import torch

from model_defs.attn_metadata import graph_inputs, pad_to_bucket
from runtime.loaders.aoti import load_package
from runtime.loaders.compiled import CompiledLoader


class PiecewiseLoader(CompiledLoader):
    """An `aoti_piecewise` artifact: `pieces/<digest>.pt2` packages and the step's `plan`."""

    def load_program(self, device: torch.device) -> dict:
        root = Path(self.artifact.path)
        pieces = self.manifest["pieces"]
        return {d: load_package(root / p["package"], device) for d, p in pieces.items()}

    def program_call(self, program: dict, weights: dict[str, torch.Tensor]) -> PiecewiseCall:
        man = self.manifest
        steps = [
            _Step(program[s["piece"]], [tuple(b) for b in s["bindings"]], s["outputs"], weights)
            for s in man["plan"]
        ]
        return PiecewiseCall(steps, man["results"], man.get("token_buckets", []))


WEIGHT, INPUT, VALUE = "weight", "input", "value"


class _Step:
    """One piece call: the package, an argument template with the weights filled in, and the
    (position, role, name) of every argument that changes per step."""

    def __init__(self, package, bindings: list, outputs: list[str], weights: dict):
        self.package, self.outputs = package, outputs
        self.template = [weights[name] if role == WEIGHT else None for role, name in bindings]
        self.fill = [(i, role, name) for i, (role, name) in enumerate(bindings) if role != WEIGHT]


class PiecewiseCall:
    """The runner's `(ids, pos, attn, kv) -> hidden` over a piecewise artifact's packages."""

    def __init__(self, steps: list[_Step], results: list[str], token_buckets: list[int]):
        self.steps, self.result, self.token_buckets = steps, results[0], token_buckets

    def __call__(self, input_ids, positions, attn, kv_caches) -> torch.Tensor:
        n = input_ids.shape[0]
        input_ids, positions, attn = pad_to_bucket(input_ids, positions, attn, self.token_buckets)
        sources = {INPUT: graph_inputs(input_ids, positions, attn, kv_caches), VALUE: {}}
        values = sources[VALUE]
        for step in self.steps:
            args = list(step.template)
            for i, role, name in step.fill:
                args[i] = sources[role][name]
            values.update(zip(step.outputs, step.package(*args), strict=True))
        return values[self.result][:n]
