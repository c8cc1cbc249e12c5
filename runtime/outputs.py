"""What the engine reports per request per step."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token_id, logprob), best first


@dataclass
class RequestOutput:
    """The progress of one request in one `Engine.step()`.

    `new_*` fields hold what this step added (for streaming); `token_ids`/`text` hold the whole
    output so far. Text that might be the start of a stop string is held back until resolved.
    """

    request_id: str
    prompt_token_ids: list[int]
    new_token_ids: list[int]
    new_text: str
    token_ids: list[int]
    text: str
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    new_logprobs: list[TokenLogprob] | None = None
    metrics: dict = field(default_factory=dict)  # arrival/first-token/finish times (s)
