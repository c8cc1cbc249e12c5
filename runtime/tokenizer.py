"""Tokenizer loading for the serve path.

`transformers` costs seconds to import, which a warm start cannot afford. When a checkpoint
ships a `tokenizer.json` (every fast HF tokenizer does), `FastTokenizer` serves it straight
from the `tokenizers` library with the chat template and special tokens of
`tokenizer_config.json`; anything else falls back to `transformers.AutoTokenizer`.
"""

from __future__ import annotations

import json
from pathlib import Path

from kiln.errors import KilnError


class FastTokenizer:
    """The subset of the HF tokenizer API Kiln uses, over a `tokenizers.Tokenizer`."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        cfg_file = path / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        self.chat_template = cfg.get("chat_template")
        self.bos_token = _token_text(cfg.get("bos_token"))
        self.eos_token = _token_text(cfg.get("eos_token"))
        self.bos_token_id = self._tok.token_to_id(self.bos_token) if self.bos_token else None
        self.eos_token_id = self._tok.token_to_id(self.eos_token) if self.eos_token else None
        self.model_max_length = cfg.get("model_max_length")

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=False)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids, skip_special_tokens: bool = False, **_) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self._tok.id_to_token(ids)
        return [self._tok.id_to_token(i) for i in ids]

    def apply_chat_template(
        self, messages, tokenize: bool = True, add_generation_prompt: bool = False, **kwargs
    ):
        if not self.chat_template:
            raise KilnError("this model's tokenizer has no chat template")
        text = _compile_template(self.chat_template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
            **kwargs,
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _compile_template(source: str):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined
    )

    def raise_exception(message):
        raise KilnError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def load_tokenizer(path: Path):
    if (path / "tokenizer.json").is_file():
        try:
            return FastTokenizer(path)
        except Exception as e:  # noqa: BLE001 - a tokenizer.json tokenizers can't read
            reason = e
    else:
        reason = "no tokenizer.json"
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise KilnError(f"could not load a tokenizer from {path}: {e} ({reason})") from None
