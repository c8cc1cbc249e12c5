"""The torch-free weight plan: the decoder's parameters as `parameter_shapes` says, every
checkpoint tensor mapped to one byte range, and a damaged checkpoint named before any read."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch
from hf_models import make_checkpoint
from safetensors.torch import load_file, save_file

from kiln.errors import KilnError
from model_defs.checkpoint_files import read_header
from model_defs.decoder import DecoderForCausalLM
from model_defs.registry import read_config
from model_defs.weight_plan import ALIGN, PlanUnsupported, parameter_shapes, plan_weights

FAMILIES = ("llama", "llama3", "qwen2", "qwen3", "mistral")


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    make_checkpoint(path, request.param, seed=5)
    return path


def test_parameter_shapes_are_the_decoders(checkpoint):
    _, cfg = read_config(checkpoint)
    with torch.device("meta"):
        model = DecoderForCausalLM(cfg)
    want = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    assert list(parameter_shapes(cfg).items()) == want


def test_every_byte_of_every_parameter_is_written_once(checkpoint):
    family, cfg = read_config(checkpoint)
    plan = plan_weights(checkpoint, family, cfg)
    covered = bytearray(plan.arena_bytes)
    for c in plan.copies:
        assert not any(covered[c.arena_offset : c.arena_offset + c.nbytes])
        covered[c.arena_offset : c.arena_offset + c.nbytes] = b"\1" * c.nbytes
    for slot in plan.params:
        assert slot.offset % ALIGN == 0
        assert slot.nbytes == math.prod(slot.shape) * 4  # the test checkpoints are fp32
        assert all(covered[slot.offset : slot.offset + slot.nbytes]), slot.name
    assert plan.data_bytes == sum(s.nbytes for s in plan.params)


def test_qkv_parts_land_in_row_order(tmp_path):
    make_checkpoint(tmp_path, "qwen2", seed=1)  # qkv with bias
    family, cfg = read_config(tmp_path)
    plan = plan_weights(tmp_path, family, cfg)
    header = {e.offset: e.name for e in read_header(plan.files[0])}
    slot = next(s for s in plan.params if s.name == "layers.1.self_attn.qkv_proj.weight")
    row = cfg.hidden_size * 4
    parts = {header[c.file_offset]: (c.arena_offset - slot.offset) // row for c in plan.copies
             if slot.offset <= c.arena_offset < slot.offset + slot.nbytes}  # fmt: skip
    q = cfg.num_heads * cfg.head_dim
    kv = cfg.num_kv_heads * cfg.head_dim
    prefix = "model.layers.1.self_attn."
    assert parts == {prefix + "q_proj.weight": 0, prefix + "k_proj.weight": q,
                     prefix + "v_proj.weight": q + kv}  # fmt: skip


def _rewrite_header(file, edit):
    data = file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


@pytest.fixture
def llama(tmp_path):
    make_checkpoint(tmp_path, "llama", seed=2)
    return tmp_path


def _plan(path):
    family, cfg = read_config(path)
    return plan_weights(path, family, cfg)


def test_truncated_shard_is_named(llama):
    file = llama / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(KilnError, match=r"model.safetensors: tensor .* corrupt or truncated"):
        _plan(llama)


def test_not_a_safetensors_file(llama):
    (llama / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(KilnError, match="not a safetensors file or is truncated"):
        _plan(llama)


def test_header_that_is_not_json(llama):
    file = llama / "model.safetensors"
    data = file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    file.write_bytes(data[:8] + b"{" * n + data[8 + n :])
    with pytest.raises(KilnError, match="header is not valid JSON"):
        _plan(llama)


def test_integer_weight_is_refused(llama):
    weights = load_file(llama / "model.safetensors")
    weights["model.norm.weight"] = torch.ones(weights["model.norm.weight"].shape, dtype=torch.int32)
    save_file(weights, llama / "model.safetensors")
    with pytest.raises(
        KilnError, match="model.norm.weight has dtype I32; weights must be floating"
    ):
        _plan(llama)


def test_parts_of_one_parameter_in_two_dtypes_are_left_to_the_plain_loader(llama):
    weights = load_file(llama / "model.safetensors")
    name = "model.layers.0.self_attn.k_proj.weight"
    weights[name] = weights[name].to(torch.bfloat16)
    save_file(weights, llama / "model.safetensors")
    with pytest.raises(PlanUnsupported, match="qkv_proj.weight have different dtypes"):
        _plan(llama)


def test_missing_and_unexpected_weights_match_the_plain_loaders_messages(llama):
    weights = load_file(llama / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, llama / "model.safetensors")
    with pytest.raises(
        KilnError, match=r"lacks weights for: layers.1.mlp.gate_up_proj.weight\[up\]"
    ):
        _plan(llama)
    weights["model.layers.1.mlp.up_proj.weight"] = torch.ones(3)
    save_file(weights, llama / "model.safetensors")
    with pytest.raises(KilnError, match=r"shape mismatch for model.layers.1.mlp.up_proj.weight"):
        _plan(llama)


def test_data_offsets_past_the_end_are_refused(llama):
    file = llama / "model.safetensors"

    def stretch(header):
        entry = header["model.norm.weight"]
        entry["data_offsets"] = [entry["data_offsets"][0], entry["data_offsets"][1] + 4]

    _rewrite_header(file, stretch)
    with pytest.raises(KilnError, match="'model.norm.weight'.*wrong size"):
        _plan(llama)
