"""The light tokenizer must behave exactly like `transformers.AutoTokenizer` on the demo."""

from transformers import AutoTokenizer

from model_defs.demo import ensure_demo_checkpoint
from runtime.tokenizer import FastTokenizer

TEXTS = [
    "héllo ✓",
    "",
    "  spaces  and\nnewlines\t",
    "emoji 🧪🔥 and 中文字符",
    "the cat sat on the mat",
]
CHATS = [
    [{"role": "user", "content": "hi"}],
    [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "héllo ✓"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "again"},
    ],
]


def test_fast_tokenizer_matches_transformers():
    path = ensure_demo_checkpoint()
    fast, ref = FastTokenizer(path), AutoTokenizer.from_pretrained(str(path))
    assert fast.eos_token_id == ref.eos_token_id and fast.bos_token_id == ref.bos_token_id
    assert len(fast) == len(ref)
    for text in TEXTS:
        for special in (True, False):
            ids = fast.encode(text, add_special_tokens=special)
            assert ids == ref.encode(text, add_special_tokens=special)
            assert fast.decode(ids, skip_special_tokens=True) == text
            assert fast.decode(ids) == ref.decode(ids)
    for chat in CHATS:
        for gen in (True, False):
            assert fast.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=gen
            ) == ref.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
