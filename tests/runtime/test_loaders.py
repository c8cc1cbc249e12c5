"""The runtime's loader interface: one loader per artifact kind, chosen by the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compile_cache import Artifact
from kiln.errors import KilnError
from runtime.loaders import EagerLoader, Forward, loader_for, read_artifact
from runtime.loaders.aoti import AOTILoader
from runtime.loaders.jit import JitLoader
from runtime.loaders.piecewise import PiecewiseLoader

CPU = {"name": "cpu", "device_type": "cpu"}


def artifact(**manifest) -> Artifact:
    return Artifact("ab" * 32, Path("/nonexistent"), {"target": CPU, **manifest})


@pytest.mark.parametrize(
    "kind, loader",
    [("aoti", AOTILoader), ("aoti_piecewise", PiecewiseLoader), ("inductor_jit", JitLoader)],
)
def test_the_manifest_picks_the_loader(kind, loader):
    assert type(loader_for(artifact(lowering=kind))) is loader


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(
        KilnError, match="lowering 'tvm'.*loads aoti, aoti_piecewise, inductor_jit, plan"
    ):
        loader_for(artifact(lowering="tvm"))


def test_a_gpu_artifact_is_refused_on_a_host_without_that_gpu():
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    h100 = {"name": "h100", "device_type": "cuda", "arch": "sm_90a"}
    with pytest.raises(KilnError, match="targets h100 \\(sm_90a\\), but this host has no GPU"):
        loader_for(artifact(lowering="aoti", target=h100))


def test_read_artifact_needs_a_manifest(tmp_path):
    with pytest.raises(KilnError, match="is not a Kiln artifact"):
        read_artifact(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"key": "cd" * 32, "lowering": "aoti"}))
    art = read_artifact(tmp_path)
    assert art.key == "cd" * 32 and art.path == tmp_path


def test_jit_programs_compile_per_shape_and_aoti_only_with_jit_calls():
    assert JitLoader(artifact(lowering="inductor_jit")).compiles_per_shape()
    assert not AOTILoader(artifact(lowering="aoti", calls=[])).compiles_per_shape()
    assert AOTILoader(artifact(lowering="aoti", calls=["attention"])).compiles_per_shape()


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Parameter(torch.randn(5, 3))

    def forward(self, input_ids, positions, attn, kv):
        return self.head[input_ids]

    def compute_logits(self, hidden):
        return hidden @ self.head.t()


def test_eager_loader_runs_the_module_and_its_logits():
    model, phases = TinyModel(), {}
    forward = EagerLoader().load(model, phases)
    assert isinstance(forward, Forward) and forward.key is None and phases == {}
    ids = torch.tensor([1, 4])
    assert torch.equal(forward(ids, None, None, None), model.head[ids])
    hidden = torch.randn(2, 3)
    assert torch.equal(forward.compute_logits(hidden), hidden @ model.head.t())


def test_eager_loader_times_the_transform_it_is_given():
    model, phases = TinyModel(), {}
    forward = EagerLoader(lambda m: lambda ids, pos, attn, kv: -m.head[ids]).load(model, phases)
    assert torch.equal(forward(torch.tensor([2]), None, None, None), -model.head[[2]])
    assert phases["compile"] >= 0.0
    assert "captured graph" in EagerLoader(lambda m: m).describe()
