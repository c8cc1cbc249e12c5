"""Server-side text of the engine-core split: stop strings end a request the core still runs."""

from __future__ import annotations

import pytest

from kiln.errors import KilnError
from model_defs.registry import resolve_model_path
from runtime.core_messages import TokenDelta
from runtime.outputs import TokenLogprob
from runtime.sampling_params import SamplingParams
from runtime.tokenizer import load_tokenizer
from server.core_streams import CoreStreams

TOK = load_tokenizer(resolve_model_path("demo"))  # the demo vocabulary: byte b has id b


def _streams() -> CoreStreams:
    return CoreStreams(TOK, vocab_size=128_256, max_model_len=64)


def test_stop_string_cuts_text_and_tokens_and_asks_for_an_abort():
    streams = _streams()
    streams.open("r-0", [5, 6, 7], SamplingParams(max_tokens=20, stop=("END",), logprobs=0))
    texts = []
    for ch in "okEN":
        out, stop_here = streams.advance(TokenDelta("r-0", [ord(ch)]))
        assert not stop_here and not out.finished
        texts.append(out.new_text)
    lp = TokenLogprob(ord("D"), -0.1)
    out, stop_here = streams.advance(TokenDelta("r-0", [ord("D")], None, [lp]))
    assert stop_here and out.finished and out.finish_reason == "stop"
    assert "".join(texts) + out.new_text == "ok" and out.text == "ok"  # "EN" was held back
    assert out.token_ids == [ord(c) for c in "okEND"] and out.new_logprobs == [lp]
    assert streams.advance(TokenDelta("r-0", [ord("x")])) == (None, False)  # gone


def test_core_finish_flushes_and_unknown_ids_add_no_text():
    streams = _streams()
    streams.open("r-1", "hi", SamplingParams(max_tokens=3))
    out, _ = streams.advance(TokenDelta("r-1", [100_000]))
    assert out.new_text == "" and out.token_ids == [100_000]
    out, stop_here = streams.advance(TokenDelta("r-1", [ord("A"), 120_000], "length"))
    assert not stop_here and out.finish_reason == "length" and out.text == "A"
    assert out.token_ids == [100_000, ord("A"), 120_000]


def test_prompts_are_checked_before_they_reach_the_core():
    streams = _streams()
    with pytest.raises(KilnError, match="context length 64"):
        streams.open("a", [1] * 60, SamplingParams(max_tokens=10))
    with pytest.raises(KilnError, match="outside the vocabulary"):
        streams.open("b", [1, 128_256], SamplingParams())
    with pytest.raises(KilnError, match="empty"):
        streams.open("c", [], SamplingParams())
