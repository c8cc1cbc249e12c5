"""A small Llama checkpoint that Kiln generates itself, so tests and demos need no download.

Every file is a pure function of this code: the same bytes on every machine. Weights are drawn
from a seeded CPU `torch.Generator` as *integers* and shaped into a near-normal (Irwin-Hall) law
with exact integer sums and single IEEE roundings, because `Tensor.normal_` on CPU goes through
vectorised transcendental math whose last bits differ between CPUs (AVX2, AVX-512, ARM).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from model_defs import demo_tokenizer as tok

DEMO_NAME = "demo-v1"  # bump when anything below changes the files
SEED = 20260101
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 256, 688, 4, 8, 4
HEAD_DIM = HIDDEN // HEADS
MAX_POSITIONS = 2048
# std 0.02 everywhere gives near-uniform next-token laws and greedy loops that forget the
# prompt; these give varied greedy text whose top-1/top-2 logit gap is mostly well above 0.1.
EMBED_STD, MATRIX_STD, LM_HEAD_STD = 0.5, 0.08, 0.25
# Irwin-Hall: the sum of 12 uniforms on [0, 1) has variance 1.
_UNIFORM_TERMS, _UNIFORM_BITS = 12, 16


def ensure_demo_checkpoint(root: Path | None = None) -> Path:
    """Return `<root>/models/demo-v1`, creating it first if needed; `root` defaults to
    `kiln.env.cache_dir()`. Files are written to a private temp dir and renamed into place, so
    readers never see a partial checkpoint and concurrent creators do not clash."""
    if root is None:
        from kiln import env

        root = env.cache_dir()
    final = Path(root) / "models" / DEMO_NAME
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{DEMO_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        write_demo_checkpoint(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_demo_checkpoint(folder: Path) -> None:
    """Write the checkpoint files into an existing (empty) folder."""
    document = tok.tokenizer_document()
    specials = tok.special_token_ids(document)
    vocab_size = len(document["model"]["vocab"]) + len(specials)
    _write_json(folder / "tokenizer.json", document)
    _write_json(folder / "tokenizer_config.json", tok.tokenizer_config(specials, MAX_POSITIONS))
    _write_json(folder / "special_tokens_map.json", _special_tokens_map())
    _write_json(folder / "config.json", model_config(vocab_size, specials))
    _write_json(folder / "generation_config.json", _generation_config(specials))
    _write_weights(folder / "model.safetensors", vocab_size)


def model_config(vocab_size: int, specials: dict[str, int]) -> dict:
    """The HF `config.json` of a Llama-3-shaped model."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "vocab_size": vocab_size,
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
        "bos_token_id": specials[tok.BOS],
        "eos_token_id": specials[tok.EOS],
    }


def _generation_config(specials: dict[str, int]) -> dict:
    return {
        "bos_token_id": specials[tok.BOS],
        "eos_token_id": [specials[tok.EOS], specials["<|eot_id|>"]],
        "do_sample": False,
    }


def _special_tokens_map() -> dict:
    return {"bos_token": tok.BOS, "eos_token": tok.EOS, "pad_token": tok.EOS}


def weight_shapes(vocab_size: int) -> dict[str, tuple[int, ...]]:
    """HF LlamaForCausalLM parameter names and shapes."""
    kv = KV_HEADS * HEAD_DIM
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab_size, HIDDEN),
        "model.norm.weight": (HIDDEN,),
        "lm_head.weight": (vocab_size, HIDDEN),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes[p + "self_attn.q_proj.weight"] = (HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "self_attn.k_proj.weight"] = (kv, HIDDEN)
        shapes[p + "self_attn.v_proj.weight"] = (kv, HIDDEN)
        shapes[p + "self_attn.o_proj.weight"] = (HIDDEN, HEADS * HEAD_DIM)
        shapes[p + "mlp.gate_proj.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[p + "mlp.up_proj.weight"] = (INTERMEDIATE, HIDDEN)
        shapes[p + "mlp.down_proj.weight"] = (HIDDEN, INTERMEDIATE)
        shapes[p + "input_layernorm.weight"] = (HIDDEN,)
        shapes[p + "post_attention_layernorm.weight"] = (HIDDEN,)
    return shapes


def demo_weights(vocab_size: int) -> dict:
    """All weights, drawn in sorted-name order from one seeded generator (fp32)."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(SEED)
    weights = {}
    for name, shape in sorted(weight_shapes(vocab_size).items()):
        if name.endswith("norm.weight"):
            weights[name] = torch.ones(shape, dtype=torch.float32)
        else:
            weights[name] = _near_normal(shape, _std(name), gen)
    return weights


def _std(name: str) -> float:
    if name == "model.embed_tokens.weight":
        return EMBED_STD
    return LM_HEAD_STD if name == "lm_head.weight" else MATRIX_STD


def _near_normal(shape: tuple[int, ...], std: float, gen) -> object:
    """Irwin-Hall draw: exact integer sums, then one float64 scale and one fp32 rounding."""
    import torch

    levels = 1 << _UNIFORM_BITS
    draws = torch.randint(0, levels, (_UNIFORM_TERMS, *shape), generator=gen, dtype=torch.int64)
    centred = 2 * draws.sum(dim=0) - _UNIFORM_TERMS * (levels - 1)  # exact, odd-symmetric
    return (centred.to(torch.float64) * (std / (2 * levels))).to(torch.float32)


def _write_weights(path: Path, vocab_size: int) -> None:
    from safetensors.torch import save_file

    weights = demo_weights(vocab_size)
    save_file(dict(sorted(weights.items())), str(path), metadata={"format": "pt"})


def _write_json(path: Path, data: dict) -> None:
    path.write_text(
        json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
