"""The demo checkpoint's byte-level BPE tokenizer, built from data in this file.

The merges come from a tiny BPE run over an embedded word list with fixed tie-breaking, so the
tokenizer is the same on every machine and needs no training corpus or download. The
`tokenizer.json` document is written out field by field (not via `Tokenizer.to_str()`), so its
bytes do not depend on the installed `tokenizers` version.
"""

from __future__ import annotations

import json
from collections import Counter

NUM_MERGES = 251  # 256 bytes + 251 merges + 5 specials = 512 ids
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
SPECIAL_TOKENS = (BOS, EOS, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

# Common English words, most frequent first; a word's weight falls with its rank.
_WORDS = """
the of and to a in is that for it as was with be by on not he this are or his from at which
but have an they you were her she there one all we their can has more will would been if no
when so what out up said about other into than its time only could new them man some these
then two first may any like now my such make over our even most me state after also made
many did must before back see through way where get much go well your know should down work
year because come people just say each those take day good how long own too little use us
very great still men here life both between old under last never place same another think
house while high right might came off find states since used give against three himself
look few general hand school part small american home during number again world
hello assistant user system model token text write code python function return value
question answer please thank yes data test string list number print model engine kiln
""".split()


def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable character, as byte-level BPE spells bytes (printables map to
    themselves, every other byte to a character from U+0100 upward, in byte order)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def build_merges(num_merges: int = NUM_MERGES) -> list[tuple[str, str]]:
    """Run BPE over the embedded word list; ties go to the smallest pair, so it is repeatable."""
    table = bytes_to_unicode()
    words: Counter[tuple[str, ...]] = Counter()
    for rank, word in enumerate(_WORDS):
        weight = len(_WORDS) - rank
        for form, w in ((" " + word, 3 * weight), (word, weight), (" " + word.title(), weight)):
            words[tuple(table[b] for b in form.encode())] += w
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, weight in words.items():
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += weight
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        words = Counter({_merge(s, best): w for s, w in words.items()})
    return merges


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def tokenizer_document() -> dict:
    """The full `tokenizer.json` content: byte-level BPE plus the five special tokens."""
    table = bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    merges = build_merges()
    for left, right in merges:
        vocab[left + right] = len(vocab)
    specials = {tok: len(vocab) + i for i, tok in enumerate(SPECIAL_TOKENS)}
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(tok, idx) for tok, idx in specials.items()],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", **byte_level},
        "post_processor": _bos_processor(specials[BOS]),
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[left, right] for left, right in merges],
        },
    }


def _added_token(content: str, idx: int) -> dict:
    return {
        "id": idx,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _bos_processor(bos_id: int) -> dict:
    """Prepend BOS when special tokens are requested, as Llama 3 does."""
    bos = {"SpecialToken": {"id": BOS, "type_id": 0}}
    return {
        "type": "TemplateProcessing",
        "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            bos,
            {"Sequence": {"id": "A", "type_id": 0}},
            bos,
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {BOS: {"id": BOS, "ids": [bos_id], "tokens": [BOS]}},
    }


# Llama-3-style chat format: header per role, content trimmed, turns closed by <|eot_id|>.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def tokenizer_config(specials: dict[str, int], max_length: int) -> dict:
    """`tokenizer_config.json`: loads as PreTrainedTokenizerFast, with the chat template."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "clean_up_tokenization_spaces": False,  # keeps decode(encode(s)) == s
        "model_max_length": max_length,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(idx): {k: v for k, v in _added_token(tok, idx).items() if k != "id"}
            for tok, idx in specials.items()
        },
    }


def special_token_ids(document: dict) -> dict[str, int]:
    return {t["content"]: t["id"] for t in document["added_tokens"]}


def build_tokenizer():
    """The demo tokenizer as a `tokenizers.Tokenizer`, without touching the disk."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(tokenizer_document()))
