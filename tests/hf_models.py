"""Tiny random-weight checkpoints built with `transformers` configs (the reference)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

TINY = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
)


def hf_config(family: str, **overrides):
    import transformers as tf

    kw = dict(TINY, **overrides)
    if family == "llama":
        return tf.LlamaConfig(**kw)
    if family == "llama3":
        kw.setdefault(
            "rope_scaling",
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        )
        kw.setdefault("tie_word_embeddings", True)
        return tf.LlamaConfig(**kw)
    if family == "qwen2":
        return tf.Qwen2Config(**kw)
    if family == "qwen3":
        kw.setdefault("head_dim", 32)
        return tf.Qwen3Config(**kw)
    if family == "mistral":
        kw.setdefault("sliding_window", 8)
        return tf.MistralConfig(**kw)
    raise ValueError(family)


def make_checkpoint(path: Path, family: str, seed: int = 0, **overrides):
    """Save a random `transformers` model of `family` to `path`; returns the HF model (fp32)."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = hf_config(family, **overrides)
    model = tf.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():  # larger than default init so tokens differ and errors show
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.08)
            elif p.dim() == 1:
                p.uniform_(0.5, 1.5) if "norm" in "" else p.normal_(1.0, 0.1)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(path, safe_serialization=True)
    return model


_SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}


def make_shape_only_checkpoint(path: Path, cfg, dtype: torch.dtype = torch.bfloat16) -> Path:
    """config.json and one sparse safetensors file of zeros holding every tensor of the
    `transformers` config `cfg` in `dtype`: the real names and shapes, no disk blocks written
    for the data (an 8B shape is 16 GB on paper, a few KiB on disk)."""
    import transformers as tf

    path.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        model = tf.AutoModelForCausalLM.from_config(cfg).to(dtype)
    state = model.state_dict()
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    header, offset = {}, 0
    for name, t in state.items():
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}  # fmt: skip
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)
    cfg.architectures = [type(model).__name__]
    cfg.save_pretrained(path)
    return path


def add_demo_tokenizer(path: Path) -> None:
    """Give a checkpoint the demo's tokenizer (512 entries), so an engine can serve it; prompts
    given as token ids below the checkpoint's vocabulary decode with it."""
    import shutil

    from model_defs.demo import ensure_demo_checkpoint

    demo = ensure_demo_checkpoint()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(demo / name, path / name)
