"""Incremental detokenizer: split UTF-8, stop strings across tokens, hold-back, small windows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_defs.demo_tokenizer import build_tokenizer
from runtime.detokenizer import IncrementalDetokenizer

TOK = build_tokenizer()
EOS = TOK.token_to_id("<|end_of_text|>")
TEXTS = ["héllo ✓", "emoji 🎉👩‍👩‍👧 done", "日本語のテキスト", "mixed: the café 東京 ✓✓\n\n  end"]


def _bytewise(text: str) -> list[int]:
    """One token per byte: the demo vocab gives byte b the id b."""
    return list(text.encode())


def _stream(detok: IncrementalDetokenizer, ids: list[int], chunk: int = 1) -> list[str]:
    deltas = []
    for i in range(0, len(ids), chunk):
        update = detok.add(ids[i : i + chunk])
        deltas.append(update.new_text)
        if update.stopped:
            return deltas
    deltas.append(detok.flush())
    return deltas


def test_demo_vocab_maps_bytes_to_ids():
    assert TOK.decode(_bytewise("héllo ✓")) == "héllo ✓"


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("split", ["bpe", "bytes"])
def test_streamed_text_is_whole_characters_and_complete(text, split):
    ids = TOK.encode(text, add_special_tokens=False).ids if split == "bpe" else _bytewise(text)
    detok = IncrementalDetokenizer(TOK, prompt_token_ids=TOK.encode("Say:").ids)
    deltas = _stream(detok, ids)
    assert "".join(deltas) == detok.text == text
    assert all("\ufffd" not in d for d in deltas)


def test_partial_character_is_held_then_released():
    detok = IncrementalDetokenizer(TOK, [])
    head, tail = _bytewise("✓")[:2], _bytewise("✓")[2:]
    assert detok.add(_bytewise("a") + head).new_text == "a"
    assert detok.add(tail).new_text == "✓"


def test_flush_releases_an_unfinished_character():
    detok = IncrementalDetokenizer(TOK, [])
    assert detok.add(_bytewise("x") + _bytewise("🎉")[:3]).new_text == "x"
    assert detok.flush() == "\ufffd"


def test_special_tokens_are_not_text():
    detok = IncrementalDetokenizer(TOK, [])
    ids = TOK.encode("hi there", add_special_tokens=False).ids + [EOS]
    assert "".join(_stream(detok, ids)) == "hi there"


def test_stop_string_spanning_tokens_is_cut_and_never_streamed():
    detok = IncrementalDetokenizer(TOK, [], stop=("✓ w",))
    deltas = _stream(detok, _bytewise("héllo ✓ world"))
    assert "".join(deltas) == detok.text == "héllo "
    assert detok.stopped and all("✓" not in d for d in deltas)


def test_stop_string_can_be_kept():
    detok = IncrementalDetokenizer(TOK, [], stop=("✓ w",), include_stop_str_in_output=True)
    assert "".join(_stream(detok, _bytewise("héllo ✓ world"))) == "héllo ✓ w"


def test_possible_stop_prefix_is_held_until_resolved():
    detok = IncrementalDetokenizer(TOK, [], stop=("cats",))
    assert detok.add(_bytewise("the ca")).new_text == "the "
    assert detok.add(_bytewise("t")).new_text == ""
    assert detok.add(_bytewise("!")).new_text == "cat!"
    assert detok.flush() == "" and detok.text == "the cat!"


def test_stop_reports_consumed_tokens_and_ignores_later_adds():
    detok = IncrementalDetokenizer(TOK, [], stop=("END",))
    update = detok.add(_bytewise("okEND more"))
    assert (update.new_text, update.stopped, update.num_tokens) == ("ok", True, 5)
    assert detok.add(_bytewise("x")).stopped and detok.flush() == ""


def test_window_stays_small_on_long_outputs():
    calls = []

    class Counting:
        def decode(self, ids, skip_special_tokens=True):
            calls.append(len(ids))
            return TOK.decode(ids, skip_special_tokens=skip_special_tokens)

    text = "日本語 and héllo ✓ 🎉 " * 100
    ids = TOK.encode(text, add_special_tokens=False).ids
    detok = IncrementalDetokenizer(Counting(), list(range(40)))
    assert "".join(_stream(detok, ids)) == text
    assert max(calls) <= 8  # decodes a few recent tokens, never the whole output
    assert sum(calls) <= 8 * len(ids)


def test_ids_beyond_the_tokenizer_keep_the_window_small():
    """A 128,256-id model over the demo's 512-entry tokenizer: unknown ids decode to nothing
    and must not pile up in the decode window (each step would re-decode all of them)."""
    calls = []

    class Counting:
        def decode(self, ids, skip_special_tokens=True):
            calls.append(len(ids))
            return TOK.decode(ids, skip_special_tokens=skip_special_tokens)

    unknown = [100_000 + 7 * i for i in range(2000)]
    text_ids = _bytewise("ok ✓")
    detok = IncrementalDetokenizer(Counting(), [1, 2, 3])
    deltas = _stream(detok, unknown[:1000] + text_ids + unknown[1000:])
    assert "".join(deltas) == "ok ✓"
    assert max(calls) <= 8


def test_works_with_a_transformers_tokenizer():
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer())
    text = "héllo ✓ 🎉 日本"
    detok = IncrementalDetokenizer(hf, [], stop=("日",))
    assert "".join(_stream(detok, _bytewise(text))) == "héllo ✓ 🎉 "


def _reference(text: str, stops: list[str], include: bool) -> str:
    found = [(text.find(s) + len(s), -text.find(s)) for s in stops if s in text]
    if not found:
        return text
    end, neg_start = min(found)
    return text[:end] if include else text[:-neg_start]


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="ab ✓é🎉\n", max_size=30),
    stops=st.lists(st.text(alphabet="ab ✓é🎉\n", min_size=1, max_size=4), max_size=3),
    include=st.booleans(),
    chunk=st.integers(1, 4),
    bytewise=st.booleans(),
)
def test_streaming_matches_reference_for_any_text_and_stops(text, stops, include, chunk, bytewise):
    ids = _bytewise(text) if bytewise else TOK.encode(text, add_special_tokens=False).ids
    detok = IncrementalDetokenizer(TOK, [], stop=tuple(stops), include_stop_str_in_output=include)
    expected = _reference(text, stops, include)
    seen = ""
    for i in range(0, len(ids), chunk):
        update = detok.add(ids[i : i + chunk])
        seen += update.new_text
        assert expected.startswith(seen)  # nothing released is ever taken back
        if update.stopped:
            break
    seen += detok.flush()
    assert seen == detok.text == expected
    assert detok.stopped == any(s in text for s in stops)


class _SlottedDecoder:
    """A decoder that takes no weak reference (so no cache of lone tokens' texts)."""

    __slots__ = ()

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return TOK.decode(ids, skip_special_tokens=skip_special_tokens)


def test_a_tokenizer_without_weak_references_streams_the_same_text():
    ids = TOK.encode(TEXTS[1]).ids
    cached = "".join(_stream(IncrementalDetokenizer(TOK, [], ()), ids))
    plain = "".join(_stream(IncrementalDetokenizer(_SlottedDecoder(), [], ()), ids))
    assert plain == cached == TOK.decode(ids, skip_special_tokens=True)
