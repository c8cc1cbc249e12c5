"""Reading and validating OpenAI request bodies: every bad field becomes a 400 naming it."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from kiln.errors import KilnError
from runtime.sampling_params import SamplingParams
from server.errors import APIError, param_of

_MISSING = object()
MAX_N = 128


async def read_json(request: web.Request) -> dict:
    """The body as a JSON object; 400 if it is not one, 413 (raised by aiohttp) if too big."""
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise APIError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    return body


def bad(param: str, message: str) -> APIError:
    return APIError(400, f"`{param}` {message}", param=param, code="invalid_value")


class Body:
    """Typed, range-checked access to the fields of one request body; null means default."""

    def __init__(self, data: dict) -> None:
        self.data = data

    def get(self, name: str, default: Any = None) -> Any:
        value = self.data.get(name, _MISSING)
        return default if value is _MISSING or value is None else value

    def int(
        self, name: str, default: int | None, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        value = self.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(name, f"must be an integer, got {value!r}")
        _check_range(name, value, lo, hi)
        return value

    def float(
        self, name: str, default: float, lo: float | None = None, hi: float | None = None
    ) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad(name, f"must be a number, got {value!r}")
        _check_range(name, value, lo, hi)
        return float(value)

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise bad(name, f"must be true or false, got {value!r}")
        return value

    def str(self, name: str, default: str | None = None) -> str | None:
        value = self.get(name, default)
        if value is not None and not isinstance(value, str):
            raise bad(name, f"must be a string, got {value!r}")
        return value

    def stop(self) -> tuple[str, ...]:
        value = self.get("stop", [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            raise bad("stop", "must be a non-empty string or a list of them")
        return tuple(value)

    def int_list(self, name: str) -> tuple[int, ...]:
        value = self.get(name, [])
        if not isinstance(value, list) or not all(_is_int(t) and t >= 0 for t in value):
            raise bad(name, "must be a list of non-negative integers")
        return tuple(value)

    def include_usage(self, stream: bool) -> bool:
        options = self.get("stream_options")
        if options is None:
            return False
        if not stream:
            raise bad("stream_options", "is only allowed with `stream: true`")
        if not isinstance(options, dict):
            raise bad("stream_options", "must be an object")
        return Body(options).bool("include_usage")

    def reject(self, *names: str) -> None:
        """400 for features Kiln does not implement, rather than silently ignoring them."""
        for name in names:
            if self.get(name) not in (None, [], {}, ""):
                raise APIError(
                    400,
                    f"`{name}` is not supported by this server",
                    param=name,
                    code="unsupported_parameter",
                )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_range(name: str, value: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = (
            f"between {lo} and {hi}"
            if lo is not None and hi is not None
            else (f">= {lo}" if lo is not None else f"<= {hi}")
        )
        raise bad(name, f"must be {span}, got {value!r}")


def sampling_params(
    body: Body, *, max_tokens: int | None, logprobs: int | None, default_max_tokens: int
) -> SamplingParams:
    """The fields both endpoints share; SamplingParams re-checks and names any field it rejects."""
    top_k = body.int("top_k", 0, lo=-1)
    try:
        return SamplingParams(
            max_tokens=default_max_tokens if max_tokens is None else max_tokens,
            temperature=body.float("temperature", 1.0, 0.0, 2.0),
            top_p=body.float("top_p", 1.0, 0.0, 1.0),
            top_k=0 if top_k == -1 else top_k,  # -1 is vLLM's "off"
            min_p=body.float("min_p", 0.0, 0.0, 1.0),
            repetition_penalty=body.float("repetition_penalty", 1.0, 0.0),
            presence_penalty=body.float("presence_penalty", 0.0, -2.0, 2.0),
            frequency_penalty=body.float("frequency_penalty", 0.0, -2.0, 2.0),
            seed=body.int("seed", None),
            stop=body.stop(),
            stop_token_ids=body.int_list("stop_token_ids"),
            ignore_eos=body.bool("ignore_eos"),
            include_stop_str_in_output=body.bool("include_stop_str_in_output"),
            logprobs=logprobs,
        )
    except KilnError as e:
        raise APIError(400, str(e), param=param_of(e), code="invalid_value") from None


def seeded(params: SamplingParams, n: int) -> list[SamplingParams]:
    """n copies for the n choices; with a seed, choice i gets seed + i so they differ."""
    if params.seed is None:
        return [params] * n
    from dataclasses import replace

    return [replace(params, seed=params.seed + i) for i in range(n)]


def check_model(body: Body, served: tuple[str, ...]) -> str:
    """The served name this request addresses; unknown names are a 400."""
    name = body.str("model")
    if name is None:
        return served[0]
    if name not in served:
        raise APIError(
            400,
            f"model {name!r} is not served here; use one of {list(served)}",
            param="model",
            code="model_not_found",
        )
    return name


def max_tokens_field(body: Body, *names: str) -> int | None:
    for name in names:
        value = body.int(name, None, lo=1)
        if value is not None:
            return value
    return None


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
