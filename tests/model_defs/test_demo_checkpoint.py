"""The embedded demo checkpoint: reproducible bytes, atomic creation, loads in transformers."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model_defs import demo
from model_defs.demo_tokenizer import build_tokenizer

TEXTS = [
    "héllo ✓",
    "emoji 🎉👩‍👩‍👧 🇫🇷 done",
    "日本語のテキストと中文和한국어",
    "  leading, trailing  \t\t and\n\n\nnewlines \r\n end ",
    "The quick brown fox said hello to the world.",
    "",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return demo.ensure_demo_checkpoint(tmp_path_factory.mktemp("root-a"))


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_two_fresh_roots_give_byte_identical_files(ckpt, tmp_path):
    other = demo.ensure_demo_checkpoint(tmp_path)
    assert other == tmp_path / "models" / "demo-v1"
    assert _digests(other) == _digests(ckpt)
    assert set(_digests(ckpt)) == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }


def test_default_root_is_kiln_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(demo, "write_demo_checkpoint", lambda d: (d / "x").write_text("1"))
    assert demo.ensure_demo_checkpoint() == tmp_path / "models" / "demo-v1"


def test_racing_creators_all_get_one_complete_folder(tmp_path, monkeypatch):
    barrier = threading.Barrier(4)

    def slow_write(folder: Path) -> None:
        (folder / "a.txt").write_text(folder.name)
        barrier.wait(timeout=10)  # every creator has a finished temp dir before any rename
        (folder / "b.txt").write_text("done")

    monkeypatch.setattr(demo, "write_demo_checkpoint", slow_write)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(demo.ensure_demo_checkpoint(tmp_path)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = tmp_path / "models" / "demo-v1"
    assert results == [final] * 4
    assert sorted(p.name for p in final.iterdir()) == ["a.txt", "b.txt"]
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["demo-v1"]  # no temp dirs left


def test_existing_checkpoint_is_reused(ckpt):
    before = {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()}
    assert demo.ensure_demo_checkpoint(ckpt.parent.parent) == ckpt
    assert {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()} == before


def test_config_matches_llama_spec(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (256, 688, 4)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (8, 4, 32)
    assert cfg["vocab_size"] == build_tokenizer().get_vocab_size() == 512
    assert cfg["tie_word_embeddings"] is False and cfg["torch_dtype"] == "float32"
    tok = build_tokenizer()
    assert cfg["bos_token_id"] == tok.token_to_id("<|begin_of_text|>")
    assert cfg["eos_token_id"] == tok.token_to_id("<|end_of_text|>")


def test_transformers_loads_model_with_exact_names(ckpt):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(ckpt, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    saved = load_file(ckpt / "model.safetensors")
    assert set(saved) == set(model.state_dict()) == set(demo.weight_shapes(512))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_weights_have_requested_scales(ckpt):
    from safetensors.torch import load_file

    w = load_file(ckpt / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in w.values())
    assert torch.equal(w["model.norm.weight"], torch.ones(256))
    assert w["model.embed_tokens.weight"].std().item() == pytest.approx(demo.EMBED_STD, rel=0.02)
    assert w["lm_head.weight"].std().item() == pytest.approx(demo.LM_HEAD_STD, rel=0.02)
    q = w["model.layers.2.self_attn.q_proj.weight"]
    assert q.std().item() == pytest.approx(demo.MATRIX_STD, rel=0.02)
    assert abs(q.mean().item()) < 0.1 * demo.MATRIX_STD
    assert not torch.equal(q, w["model.layers.1.self_attn.q_proj.weight"])


def test_greedy_generation_is_varied(ckpt):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    outs = []
    for prompt in ["The quick brown fox", "hello world"]:
        ids = tok(prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=30, do_sample=False, min_new_tokens=30)
        outs.append(out[0, ids.input_ids.shape[1] :].tolist())
    assert all(len(set(o)) >= 15 for o in outs)
    assert outs[0] != outs[1]


def test_transformers_tokenizer_round_trips_and_chats(ckpt):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    assert len(tok) == 512 and tok.model_max_length == 2048
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        with_bos = tok.encode(text)
        assert with_bos == [tok.bos_token_id, *ids]
        assert tok.decode(with_bos, skip_special_tokens=True) == text
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " hi ✓ "}]
    rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nhi ✓<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    no_prompt = tok.apply_chat_template(chat, tokenize=False)
    assert no_prompt.endswith("hi ✓<|eot_id|>")
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=False)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.convert_tokens_to_ids("<|eot_id|>") in ids


def test_byte_level_bytes_are_single_tokens():
    tok = build_tokenizer()
    text = "héllo ✓ 🎉"
    pieces = [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False).ids]
    assert "".join(pieces) != text  # some tokens end mid-character, as the detokenizer expects
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_tokenizer_round_trips_any_text(text):
    tok = _TOKENIZER
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


def test_tokenizer_round_trips_random_code_points():
    tok = build_tokenizer()
    rng = random.Random(7)
    for _ in range(50):
        chars = [
            chr(
                rng.choice(
                    [
                        rng.randrange(0x20, 0x7F),
                        rng.randrange(0xA0, 0xD800),
                        rng.randrange(0xE000, 0x110000),
                    ]
                )
            )
            for _ in range(30)
        ]
        text = "".join(chars)
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


_TOKENIZER = build_tokenizer()
