"""Running a piecewise artifact: one AOTInductor package per distinct piece, called in order.

The manifest's `plan` lists the step's pieces (prologue, each decoder layer, epilogue), which
package each calls, and where every argument comes from: a weight, a step input (KV caches
included) or a value an earlier piece returned (the residual stream). Every layer of one
structure calls the same loaded package with its own weights and KV cache. The runner's CUDA
graph capture wraps the whole call, so the Python loop over pieces costs nothing on replay.
Imports no compiler: packages load through AOTInductor's C++ loader.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from model_defs.attn_metadata import AttnMetadata, graph_inputs, pad_to_bucket

WEIGHT, INPUT, VALUE = "weight", "input", "value"


class _Step:
    """One piece call: the package, an argument template with the weights filled in, and the
    (position, role, name) of every argument that changes per step."""

    def __init__(self, package, bindings: list, outputs: list[str], weights: dict):
        self.package, self.outputs = package, outputs
        self.template = [weights[name] if role == WEIGHT else None for role, name in bindings]
        self.fill = [(i, role, name) for i, (role, name) in enumerate(bindings) if role != WEIGHT]


class PiecewiseForward:
    """The runner's forward `(ids, pos, attn, kv) -> hidden` over a piecewise artifact."""

    def __init__(
        self,
        steps: list[_Step],
        results: list[str],
        lm_head: torch.Tensor,
        vocab_size: int,
        token_buckets: list[int],
    ):
        self.steps, self.result = steps, results[0]
        self.lm_head, self.vocab_size, self.token_buckets = lm_head, vocab_size, token_buckets
        self.key: str | None = None  # the artifact's cache key, for logs
        self.compiles_per_shape = True

    def __call__(self, input_ids, positions, attn: AttnMetadata, kv_caches) -> torch.Tensor:
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

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.lm_head)[:, : self.vocab_size].float()


def load_piecewise_forward(artifact, model, phases: dict) -> PiecewiseForward:
    """Bind a piecewise artifact's packages to the model's weights (plus pass-derived ones)."""
    from runtime.artifact import bind_recorded_impls

    man, root = artifact.manifest, Path(artifact.path)
    device = model.embed_tokens.device
    t0 = time.perf_counter()
    weights, lm_head = _bind_weights(man, root, model, device)
    phases["weights_bind"] = time.perf_counter() - t0
    if man.get("calls"):
        bind_recorded_impls(man, device)
    t0 = time.perf_counter()
    packages = {d: _load_package(root / p["package"], device) for d, p in man["pieces"].items()}
    steps = [
        _Step(packages[s["piece"]], [tuple(b) for b in s["bindings"]], s["outputs"], weights)
        for s in man["plan"]
    ]
    phases["kernels"] = time.perf_counter() - t0
    forward = PiecewiseForward(
        steps, man["results"], lm_head, man["vocab_size"], man.get("token_buckets", [])
    )
    forward.key = artifact.key
    forward.compiles_per_shape = bool(man.get("calls"))
    return forward


def _bind_weights(man: dict, root: Path, model, device) -> tuple[dict, torch.Tensor]:
    """Graph weight name -> tensor: model parameters by name, the rest from derived.safetensors."""
    params = dict(model.named_parameters())
    derived = {}
    if (root / "derived.safetensors").is_file():
        from safetensors.torch import load_file

        derived = load_file(str(root / "derived.safetensors"), device=str(device))
    weights = {name: params[p] for name, p in man["weights"].items()}
    weights.update(derived)
    return weights, weights["__lm_head__"]


class _BoxedPackage:
    """AOTInductor's C++ loader called directly (no Inductor or Dynamo import)."""

    def __init__(self, loader):
        self.loader = loader

    def __call__(self, *args):
        return self.loader.boxed_run(list(args))  # boxed_run consumes its list


def _load_package(path: Path, device: torch.device):
    index = device.index if device.type == "cuda" and device.index is not None else -1
    loader_cls = getattr(getattr(torch._C, "_aoti", None), "AOTIModelPackageLoader", None)
    if loader_cls is None:  # a torch without the C++ package loader binding
        from torch._inductor import aoti_load_package

        return aoti_load_package(str(path))
    # run_single_threaded: no per-run CUDA events, which a CUDA graph capture forbids.
    return _BoxedPackage(loader_cls(str(path), "model", True, 1, index))
