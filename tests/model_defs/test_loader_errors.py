"""Every way a checkpoint folder can be wrong names the problem."""

from __future__ import annotations

import json

import pytest
import torch
from hf_models import make_checkpoint
from safetensors.torch import load_file, save_file

from kiln.errors import KilnError
from model_defs.loader import load_model
from model_defs.registry import read_config, resolve_model_path


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    make_checkpoint(path, "llama")
    return path


def clone(good, tmp_path):
    for f in good.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    return tmp_path


def test_not_a_folder():
    with pytest.raises(KilnError, match="not a checkpoint folder"):
        resolve_model_path("/no/such/dir")


def test_missing_config(tmp_path):
    with pytest.raises(KilnError, match="has no config.json"):
        read_config(tmp_path)


def test_unsupported_architecture_lists_supported(good, tmp_path):
    path = clone(good, tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        KilnError, match=r"unsupported architecture.*GPT2LMHeadModel.*supported: .*LlamaForCausalLM"
    ):
        read_config(path)


def test_unsupported_rope_type(good, tmp_path):
    path = clone(good, tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(KilnError, match="rope_type 'yarn' is not supported"):
        load_model(path)


def test_no_weights(good, tmp_path):
    path = clone(good, tmp_path)
    (path / "model.safetensors").unlink()
    with pytest.raises(KilnError, match="no \\*.safetensors weights"):
        load_model(path)


def test_missing_shard_named(good, tmp_path):
    path = clone(good, tmp_path)
    weights = load_file(path / "model.safetensors")
    names = sorted(weights)
    save_file({n: weights[n] for n in names[:5]}, path / "model-00001-of-00002.safetensors")
    (path / "model.safetensors").unlink()
    index = {
        "weight_map": {
            n: "model-00001-of-00002.safetensors" if i < 5 else "model-00002-of-00002.safetensors"
            for i, n in enumerate(names)
        }
    }
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(KilnError, match="missing: model-00002-of-00002.safetensors"):
        load_model(path)


def test_sharded_checkpoint_loads(good, tmp_path):
    path = clone(good, tmp_path)
    weights = load_file(path / "model.safetensors")
    names = sorted(weights)
    half = len(names) // 2
    files = {"a.safetensors": names[:half], "b.safetensors": names[half:]}
    for fname, part in files.items():
        save_file({n: weights[n] for n in part}, path / fname)
    (path / "model.safetensors").unlink()
    index = {"weight_map": {n: f for f, part in files.items() for n in part}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    model = load_model(path)
    assert torch.equal(model.norm, weights["model.norm.weight"])


def test_shape_mismatch_names_tensor(good, tmp_path):
    path = clone(good, tmp_path)
    weights = load_file(path / "model.safetensors")
    weights["model.norm.weight"] = torch.ones(7)
    save_file(weights, path / "model.safetensors")
    with pytest.raises(KilnError, match=r"shape mismatch for model.norm.weight.*\(7,\)"):
        load_model(path)


def test_missing_weight_named(good, tmp_path):
    path = clone(good, tmp_path)
    weights = load_file(path / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, path / "model.safetensors")
    with pytest.raises(
        KilnError, match=r"lacks weights for: layers.1.mlp.gate_up_proj.weight\[up\]"
    ):
        load_model(path)


def test_unexpected_weight_named(good, tmp_path):
    path = clone(good, tmp_path)
    weights = load_file(path / "model.safetensors")
    weights["model.layers.0.mystery.weight"] = torch.ones(3)
    save_file(weights, path / "model.safetensors")
    with pytest.raises(KilnError, match="unexpected weight 'model.layers.0.mystery.weight'"):
        load_model(path)


def test_invalid_json_config(good, tmp_path):
    path = clone(good, tmp_path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(KilnError, match="not valid JSON"):
        read_config(path)
