"""What every runnable compiled artifact shares: its weights named by model parameter (plus
the tensors a pass derived), its lm_head, and the IR ops its program calls back into."""

from __future__ import annotations

import time
from abc import abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F

from compile_cache import Artifact
from model_defs.attn_metadata import graph_inputs, pad_to_bucket
from runtime.loaders.base import Forward, Loader


class CompiledLoader(Loader):
    """An artifact whose program takes the weights as inputs; subclasses load the program."""

    def __init__(self, artifact: Artifact):
        self.artifact, self.manifest = artifact, artifact.manifest

    @abstractmethod
    def load_program(self, device: torch.device):
        """The callable program, taking the manifest's `inputs` in order."""

    def calls_ops(self) -> bool:
        """Whether the program calls IR ops through the dispatcher (`manifest["calls"]`)."""
        return bool(self.manifest.get("calls"))

    def compiles_per_shape(self) -> bool:
        """A JIT (Triton) kernel the program calls compiles per shape."""
        return self.calls_ops()

    def load(self, model: torch.nn.Module, phases: dict[str, float]) -> Forward:
        device = model.embed_tokens.device
        t0 = time.perf_counter()
        weights, lm_head = self.bind_weights(model)
        phases["weights_bind"] = time.perf_counter() - t0
        self.bind_called_ops(device)
        t0 = time.perf_counter()
        program = self.load_program(device)
        phases["kernels"] = time.perf_counter() - t0
        run = self.program_call(program, weights)
        logits = LMHead(lm_head, self.manifest["vocab_size"])
        return Forward(run, logits, key=self.artifact.key, compiles_per_shape=self.compiles_per_shape())  # fmt: skip

    def program_call(self, program, weights: dict[str, torch.Tensor]):
        """The runner's `(ids, pos, attn, kv) -> hidden` over the loaded program."""
        man = self.manifest
        return ProgramCall(program, man["inputs"], weights, man.get("token_buckets", []))

    def bind_weights(self, model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """({graph input name: tensor} for every weight input, lm_head weight)."""
        man = self.manifest
        params = dict(model.named_parameters())
        derived = {}
        derived_file = Path(self.artifact.path) / "derived.safetensors"
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
        return weights, params[head_name] if head_name else derived["__lm_head__"]

    def bind_called_ops(self, device: torch.device) -> None:
        """Route the IR ops the program calls to the implementations the compile chose (native
        on the CPU, Triton on a GPU; never Helion at run time). A program that calls none needs
        nothing here, and a warm GPU start then never imports Triton (its first launch in a
        process also hashes Triton's own library: ~0.5 s on the H200)."""
        if not self.calls_ops():
            return
        from ir.registry import bind_for

        impls = self.manifest.get("impls", {})
        calls = self.manifest.get("calls", impls)  # the ops the package calls (read from it)
        bind_for(device.type, {op: impls[op] for op in calls if op in impls})

    def describe(self) -> str:
        return f"running compiled artifact {self.artifact.key[:12]} ({self.manifest['lowering']})"


class ProgramCall:
    """Calls a compiled program with the runner's signature `(ids, pos, attn, kv)`: steps are
    padded to the program's token buckets and the weights passed as inputs."""

    def __init__(self, program, inputs: list[str], weights: dict, token_buckets: list[int]):
        self.program, self.inputs, self.weights = program, inputs, weights
        self.token_buckets = token_buckets

    def __call__(self, input_ids, positions, attn, kv_caches) -> torch.Tensor:
        n = input_ids.shape[0]
        input_ids, positions, attn = pad_to_bucket(input_ids, positions, attn, self.token_buckets)
        user = graph_inputs(input_ids, positions, attn, kv_caches)
        args = [self.weights[name] if name in self.weights else user[name] for name in self.inputs]
        out = self.program(*args)
        hidden = out[0] if isinstance(out, (list, tuple)) else out
        return hidden[:n]


class LMHead:
    """Logits from the artifact's lm_head weight (a pass may have padded its vocabulary)."""

    def __init__(self, weight: torch.Tensor, vocab_size: int):
        self.weight, self.vocab_size = weight, vocab_size

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight)[:, : self.vocab_size].float()
