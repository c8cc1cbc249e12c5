"""Loading a compiled artifact: the warm-start path.

Imports only torch, the IR ops (their references back the AOTInductor package's custom-op
calls), the compile cache and the model definitions (to read weights by parameter name):
never helion, transformers' model code or the pass machinery, and it compiles nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from kiln.errors import KilnError
from model_defs.attn_metadata import AttnMetadata, graph_inputs, pad_to_bucket


class ArtifactForward:
    """Calls an AOTInductor package with the runner's signature `(ids, pos, attn, kv)`."""

    def __init__(
        self,
        package,
        inputs: list[str],
        weights: dict[str, torch.Tensor],
        lm_head: torch.Tensor,
        vocab_size: int,
        token_buckets: list[int],
    ):
        self.package, self.inputs, self.weights = package, inputs, weights
        self.lm_head, self.vocab_size, self.token_buckets = lm_head, vocab_size, token_buckets
        self.key: str | None = None  # the artifact's cache key, for logs
        # Whether some kernel is compiled on first use of a shape: an IR op the package calls
        # runs a JIT (Triton) kernel, or the whole program runs under Inductor's jit path.
        self.compiles_per_shape = True

    def __call__(self, input_ids, positions, attn: AttnMetadata, kv_caches) -> torch.Tensor:
        n = input_ids.shape[0]
        input_ids, positions, attn = pad_to_bucket(input_ids, positions, attn, self.token_buckets)
        user = graph_inputs(input_ids, positions, attn, kv_caches)
        args = [self.weights[name] if name in self.weights else user[name] for name in self.inputs]
        out = self.package(*args)
        hidden = out[0] if isinstance(out, (list, tuple)) else out
        return hidden[:n]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.lm_head)[:, : self.vocab_size].float()


def load_artifact_forward(artifact, model, phases: dict) -> ArtifactForward:
    """Bind an artifact's package to the model's weights (plus any pass-derived ones)."""
    import time

    man = artifact.manifest
    if man.get("lowering") == "aoti_piecewise":
        from runtime.piecewise import load_piecewise_forward

        return load_piecewise_forward(artifact, model, phases)
    if man.get("lowering") not in ("aoti", "inductor_jit"):
        raise KilnError(
            f"artifact {artifact.key[:12]} was cross-compiled for {man['target']['name']} "
            f"({man['target'].get('arch')}); it holds kernels for that GPU and cannot run on this host"
        )
    t0 = time.perf_counter()
    params = dict(model.named_parameters())
    derived = {}
    derived_file = Path(artifact.path) / "derived.safetensors"
    if derived_file.is_file():
        from safetensors.torch import load_file

        derived = load_file(str(derived_file), device=str(model.embed_tokens.device))
    weights = {}
    for name in man["inputs"]:
        if name in man["weights"]:
            weights[name] = params[man["weights"][name]]
        elif name in derived:
            weights[name] = derived[name]
    head_name = man["weights"].get("__lm_head__")
    lm_head = params[head_name] if head_name else derived["__lm_head__"]
    phases["weights_bind"] = time.perf_counter() - t0
    device = model.embed_tokens.device
    if man.get("calls", True):  # the package calls IR ops (absent: built before this was kept)
        bind_recorded_impls(man, device)
    t0 = time.perf_counter()
    if man["lowering"] == "inductor_jit":
        import torch.export

        program = torch.export.load(str(Path(artifact.path) / man["program"]))
        package = jit_program(program, man["inputs"])
    else:
        package = _load_package(Path(artifact.path) / man["package"], device)
    phases["kernels"] = time.perf_counter() - t0
    forward = ArtifactForward(
        package, man["inputs"], weights, lm_head, man["vocab_size"], man.get("token_buckets", [])
    )
    forward.key = artifact.key
    forward.compiles_per_shape = man["lowering"] == "inductor_jit" or bool(man.get("calls", True))
    return forward


def bind_recorded_impls(man: dict, device: torch.device) -> None:
    """Route the IR ops the package calls to the implementations the compile chose (native
    on the CPU, Triton on a GPU; never Helion at run time). A package that calls none needs
    nothing here, and a warm GPU start then never imports Triton (its first launch in a
    process also hashes Triton's own library: ~0.5 s on the H200)."""
    from ir.registry import bind_impls

    if device.type == "cuda":
        import ir.kernels.attention  # noqa: F401  (registers the Triton implementation)
    runnable = ("native",) if device.type == "cpu" else ("triton",)
    bind_impls({op: p for op, p in man.get("impls", {}).items() if p in runnable}, device.type)


def jit_program(ep, inputs: list[str]):
    """An exported program under Inductor, every size dynamic. Dynamo still specialises sizes
    0 and 1, so a few graphs exist (single-token and single-sequence steps); `kiln compile`
    runs each once so their code is in the Inductor cache when a server loads them."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    from lowering.lowered import INDUCTOR_OPTIONS

    return torch.compile(ep.module(), dynamic=True, fullgraph=True, options=INDUCTOR_OPTIONS)


class _BoxedPackage:
    """The AOTInductor C++ loader called directly: `torch._inductor.aoti_load_package` would
    import Inductor and Dynamo (over a second) only to flatten arguments we pass flat."""

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
    # run_single_threaded: the container then skips its per-run CUDA events, whose queries are
    # illegal while a CUDA graph captures the call. The engine calls the model from one thread.
    return _BoxedPackage(loader_cls(str(path), "model", True, 1, index))


def manifest_summary(man: dict) -> str:
    return json.dumps({k: man[k] for k in ("model", "target", "lowering") if k in man})
