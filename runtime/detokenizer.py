"""Token ids -> streamed text, with stop strings, one request at a time.

Two things are held back from a step's `new_text`:
- bytes of an unfinished UTF-8 character (byte-level BPE tokens can end mid-character; such text
  decodes with a trailing U+FFFD until the rest arrives);
- a tail that could be the start of a stop string, so a client never sees part of one.

Each step decodes only a short window of recent tokens: `prefix` marks where the window starts
(text already accounted for) and `read` where the new tokens start, as in vLLM/TGI.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Protocol

_REPLACEMENT = "\ufffd"
_PROMPT_CONTEXT = 5  # prompt tokens decoded with the first output tokens, for correct spacing
# tokenizer -> {token id: its text decoded alone}: a streamed token's text is decoded twice,
# with the token before it and alone (the next window's prefix); the second is a lookup
_ALONE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class DetokUpdate:
    new_text: str  # text released by this call (safe to stream)
    stopped: bool  # a stop string was found; the request is done
    num_tokens: int = 0  # tokens of this call consumed: fewer than given when a stop ended it


class IncrementalDetokenizer:
    """Streams one request's output text. `tokenizer` is anything with
    `decode(ids, skip_special_tokens=True)`: a `tokenizers.Tokenizer` or a transformers one."""

    def __init__(
        self,
        tokenizer: Decoder,
        prompt_token_ids: list[int],
        stop: tuple[str, ...] = (),
        include_stop_str_in_output: bool = False,
    ) -> None:
        if any(not s for s in stop):
            raise ValueError(f"stop={stop!r} holds an empty string; remove it")
        self._tokenizer = tokenizer
        try:
            self._alone = _ALONE.setdefault(tokenizer, {})
        except TypeError:  # a tokenizer that takes no weak reference: no cache
            self._alone = {}
        self._stop = tuple(stop)
        self._max_hold = max((len(s) for s in stop), default=1) - 1
        self._include_stop = include_stop_str_in_output
        self._window = list(prompt_token_ids[-_PROMPT_CONTEXT:])  # tokens from `prefix` on
        self._read = len(self._window)  # window index of the first token not yet in the text
        self._prefix_text = self._decode(self._window)
        self._text = ""  # text given out so far
        self._pending = ""  # decoded but held back: might start a stop string
        self._stopped = False

    @property
    def text(self) -> str:
        """All text released so far (held-back text is not included until `flush`)."""
        return self._text

    @property
    def stopped(self) -> bool:
        return self._stopped

    def add(self, token_ids: list[int]) -> DetokUpdate:
        """Feed new tokens; returns the text they release. Stops at the first stop string."""
        if self._stopped:
            return DetokUpdate("", True, 0)
        start = len(self._text)
        for n, token_id in enumerate(token_ids, 1):
            self._pending += self._next_text(token_id)
            if self._find_stop():
                return DetokUpdate(self._text[start:], True, n)
        self._release(len(self._pending) - self._stop_prefix_len())
        return DetokUpdate(self._text[start:], False, len(token_ids))

    def flush(self) -> str:
        """At finish: release everything held back (an unfinished character shows as U+FFFD)."""
        if self._stopped:
            return ""
        start = len(self._text)
        full = self._decode(self._window)
        self._pending += full[len(self._prefix_text) :]
        self._window, self._read, self._prefix_text = [], 0, ""
        if not self._find_stop():
            self._release(len(self._pending))
        return self._text[start:]

    def _decode(self, ids: list[int]) -> str:
        if len(ids) == 1:
            return self._decode_alone(ids[0])
        return self._tokenizer.decode(ids, skip_special_tokens=True) if ids else ""

    def _decode_alone(self, token_id: int) -> str:
        text = self._alone.get(token_id)
        if text is None:
            text = self._alone[token_id] = self._tokenizer.decode(
                [token_id], skip_special_tokens=True
            )
        return text

    def _next_text(self, token_id: int) -> str:
        """Text that `token_id` completes; '' while it ends mid-character."""
        self._window.append(token_id)
        full = self._decode(self._window)
        if full.endswith(_REPLACEMENT):
            return ""  # mid-character: wait for the bytes that complete it
        if len(full) <= len(self._prefix_text):
            if not self._decode_alone(token_id):
                # An id with no text of its own (one the tokenizer lacks, a skipped special
                # token) is dropped, so the window stays short: a model whose vocabulary
                # outgrows its tokenizer emits such ids on most steps.
                self._window.pop()
            return ""
        delta = full[len(self._prefix_text) :]
        # The tokens just decoded become the next window's already-known prefix.
        self._window = self._window[self._read :]
        self._read = len(self._window)
        self._prefix_text = self._decode(self._window)
        return delta

    def _find_stop(self) -> bool:
        """If a stop string occurs in the pending text, release up to it and stop. The one that
        ends first wins (what a character-by-character stream would hit first)."""
        best: tuple[int, int] | None = None  # (end, -start)
        for s in self._stop:
            at = self._pending.find(s)
            if at >= 0:
                best = min(best or (at + len(s), -at), (at + len(s), -at))
        if best is None:
            return False
        end, start = best[0], -best[1]
        self._release(end if self._include_stop else start)
        self._pending = ""
        self._stopped = True
        return True

    def _stop_prefix_len(self) -> int:
        """Length of the longest tail of the pending text that begins some stop string."""
        for k in range(min(self._max_hold, len(self._pending)), 0, -1):
            tail = self._pending[-k:]
            if any(s.startswith(tail) for s in self._stop):
                return k
        return 0

    def _release(self, upto: int) -> None:
        if upto > 0:
            self._text += self._pending[:upto]
            self._pending = self._pending[upto:]
