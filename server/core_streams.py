"""Per-request text state on the server side of the engine-core split.

The core sends token ids; `CoreStreams` tokenizes prompts on the way in and, on the way out,
turns each `TokenDelta` into the `RequestOutput` handlers read: streamed text (whole UTF-8
characters, stop strings never shown in part), the output so far, and the finish reason,
"stop" when a stop string matched (the core cannot know; the caller aborts it there).
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.errors import KilnError
from runtime.core_messages import TokenDelta
from runtime.detokenizer import DetokUpdate, IncrementalDetokenizer
from runtime.outputs import RequestOutput
from runtime.sampling_params import SamplingParams

_NO_TEXT = DetokUpdate("", False, 0)


@dataclass
class _Stream:
    prompt_token_ids: list[int]
    detok: IncrementalDetokenizer
    token_ids: list[int]  # the output so far (grown in place; handlers only read it)


class CoreStreams:
    def __init__(self, tokenizer, vocab_size: int, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self._streams: dict[str, _Stream] = {}

    def open(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> list[int]:
        """Check and tokenize one prompt, start its stream; returns the prompt's ids."""
        ids = self._prompt_ids(prompt)
        if len(ids) + params.max_tokens > self.max_model_len:
            raise KilnError(
                f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) = "
                f"{len(ids) + params.max_tokens} exceeds the context length {self.max_model_len}"
            )
        detok = IncrementalDetokenizer(
            self.tokenizer, ids, params.stop, params.include_stop_str_in_output
        )
        self._streams[request_id] = _Stream(ids, detok, [])
        return ids

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=True)
        else:
            ids = list(prompt)
            bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < self.vocab_size]
            if bad:
                raise KilnError(
                    f"prompt token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})"
                )
        if not ids:
            raise KilnError("the prompt is empty")
        return ids

    def close(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            self._streams.pop(rid, None)

    def close_all(self) -> list[str]:
        ids = list(self._streams)
        self._streams.clear()
        return ids

    def advance(self, delta: TokenDelta) -> tuple[RequestOutput | None, bool]:
        """(the request's output for this step or None if it is gone, whether a stop string
        ended it here while the core still runs it)."""
        stream = self._streams.get(delta.request_id)
        if stream is None:
            return None, False
        ids, reason, lps = delta.new_token_ids, delta.finish_reason, delta.new_logprobs
        update = stream.detok.add(ids) if ids else _NO_TEXT
        stopped_here = update.stopped and reason is None
        if update.stopped:
            reason = "stop"
            ids = ids[: update.num_tokens]
            lps = lps[: update.num_tokens] if lps is not None else None
        text = update.new_text
        if reason is not None:
            text += stream.detok.flush()
            del self._streams[delta.request_id]
        stream.token_ids.extend(ids)
        out = RequestOutput(
            request_id=delta.request_id,
            prompt_token_ids=stream.prompt_token_ids,
            new_token_ids=ids,
            new_text=text,
            token_ids=stream.token_ids,
            text=stream.detok.text,
            finished=reason is not None,
            finish_reason=reason,
            new_logprobs=lps,
        )
        return out, stopped_here
