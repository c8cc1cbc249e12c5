"""Gathering engine outputs into OpenAI choices, and rendering logprobs both ways."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from runtime.outputs import RequestOutput, TokenLogprob
from server.protocol import usage
from server.tracker import RequestGroup


@dataclass
class Choice:
    """What one choice has produced so far (the engine sends whole text and token lists)."""

    prompt_token_ids: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None

    def add(self, out: RequestOutput) -> None:
        if out.prompt_token_ids:
            self.prompt_token_ids = out.prompt_token_ids
        if out.token_ids or not out.finished:
            self.token_ids = out.token_ids
            self.text = out.text
        self.logprobs.extend(out.new_logprobs or [])
        if out.finished:
            self.finish_reason = out.finish_reason


def envelope(request_id: str, obj: str, model: str) -> dict:
    """The fields every completion object and stream chunk carries. `request_id` is the
    first engine request's id (`<id>-<choice>`); the response id is its `<id>`."""
    return {
        "id": request_id.rsplit("-", 1)[0],
        "object": obj,
        "created": int(time.time()),
        "model": model,
    }


def usage_of(choices: list[Choice], n: int) -> dict:
    return usage(*count_usage(choices, n))


async def collect(group: RequestGroup) -> list[Choice]:
    """Wait for every choice of the group to finish."""
    choices = [Choice() for _ in group.ids]
    async for index, out in group.outputs():
        choices[index].add(out)
    return choices


def count_usage(choices: list[Choice], n: int) -> tuple[int, int]:
    """(prompt tokens, completion tokens); a prompt shared by n choices counts once."""
    prompt = sum(len(c.prompt_token_ids) for i, c in enumerate(choices) if i % n == 0)
    return prompt, sum(len(c.token_ids) for c in choices)


class TokenText:
    """Token id -> the text it decodes to, cached (logprobs name tokens by their text)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}
        self._special: dict[int, bool] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id])
            self._cache[token_id] = text
        return text

    def is_special(self, token_id: int) -> bool:
        """A control token (BOS, EOS, ...): it vanishes when special tokens are skipped."""
        special = self._special.get(token_id)
        if special is None:
            skipped = self.tokenizer.decode([token_id], skip_special_tokens=True)
            special = skipped == "" and self(token_id) != ""
            self._special[token_id] = special
        return special


def completion_logprobs(
    lps: list[TokenLogprob], text_of: TokenText, offset: int = 0, prompt_ids: list[int] = ()
) -> dict:
    """The legacy completions shape; echoed prompt tokens carry no logprob (None)."""
    tokens, token_lps, tops, offsets = [], [], [], []
    for tid in prompt_ids:
        tokens.append(text_of(tid))
        token_lps.append(None)
        tops.append(None)
        offsets.append(offset)
        offset += len(tokens[-1])
    for lp in lps:
        tokens.append(text_of(lp.token_id))
        token_lps.append(lp.logprob)
        top = {text_of(t): v for t, v in lp.top} or {tokens[-1]: lp.logprob}
        tops.append(top)
        offsets.append(offset)
        offset += len(tokens[-1])
    return {
        "tokens": tokens,
        "token_logprobs": token_lps,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def chat_logprobs(lps: list[TokenLogprob], text_of: TokenText) -> dict:
    """The chat shape: one entry per sampled token with its top alternatives."""
    return {"content": [_chat_entry(lp, text_of) for lp in lps], "refusal": None}


def _chat_entry(lp: TokenLogprob, text_of: TokenText) -> dict:
    token = text_of(lp.token_id)
    return {
        "token": token,
        "logprob": lp.logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [
            {"token": text_of(t), "logprob": v, "bytes": list(text_of(t).encode())}
            for t, v in lp.top
        ],
    }
