"""`POST /v1/completions`: text in (string, strings, or token ids), text out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from aiohttp import web

from server import sse
from server.choices import Choice, collect, completion_logprobs, envelope, usage_of
from server.protocol import (
    MAX_N,
    Body,
    bad,
    check_model,
    max_tokens_field,
    read_json,
    sampling_params,
    seeded,
)
from server.state import STATE, ServerState
from server.tracker import RequestGroup

Prompt = str | list[int]


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompts: list[Prompt]
    n: int
    stream: bool
    include_usage: bool
    echo: bool
    logprobs: int | None


def parse_prompts(value: object) -> list[Prompt]:
    """A string, a list of strings, a list of token ids, or a list of such lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(p, str) for p in value):
            return list(value)
        if all(_is_token(t) for t in value):
            return [list(value)]
        if all(isinstance(p, list) and p and all(_is_token(t) for t in p) for p in value):
            return [list(p) for p in value]
    raise bad(
        "prompt",
        "must be a string, a list of strings, a list of token ids, "
        "or a list of lists of token ids (non-empty)",
    )


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def create_completion(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = Body(await read_json(request))
    body.reject("suffix", "logit_bias")
    if "prompt" not in body.data:
        raise bad("prompt", "is required")
    stream = body.bool("stream")
    req = CompletionRequest(
        model=check_model(body, state.served_names),
        prompts=parse_prompts(body.data["prompt"]),
        n=body.int("n", 1, 1, MAX_N),
        stream=stream,
        include_usage=body.include_usage(stream),
        echo=body.bool("echo"),
        logprobs=body.int("logprobs", None, 0, 20),
    )
    best_of = body.int("best_of", None, 1)
    if best_of is not None and best_of != req.n:
        raise bad("best_of", "other than n is not supported")
    params = sampling_params(
        body,
        max_tokens=max_tokens_field(body, "max_tokens"),
        logprobs=req.logprobs,
        default_max_tokens=16,
    )
    group = await state.loop.submit(
        f"cmpl-{uuid.uuid4().hex}",
        [p for p in req.prompts for _ in range(req.n)],
        seeded(params, req.n) * len(req.prompts),
    )
    try:
        if req.stream:
            return await _stream(request, state, req, group)
        body = _response(state, req, group.ids[0], await collect(group))
        return web.json_response(body, dumps=sse.dumps)
    finally:
        state.loop.abort(group)  # a no-op once finished; frees KV blocks on disconnect


def _echo_text(state: ServerState, prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else state.tokenizer.decode(prompt)


def _visible(state: ServerState, ids: list[int]) -> list[int]:
    """Prompt ids minus special tokens (BOS), so echoed logprobs line up with echoed text."""
    return [t for t in ids if not state.token_text.is_special(t)]


def _response(state: ServerState, req: CompletionRequest, rid: str, choices: list[Choice]) -> dict:
    out = []
    for i, c in enumerate(choices):
        prompt = req.prompts[i // req.n]
        head = _echo_text(state, prompt) if req.echo else ""
        lps = None
        if req.logprobs is not None:
            echoed = _visible(state, c.prompt_token_ids) if req.echo else []
            lps = completion_logprobs(c.logprobs, state.token_text, 0, echoed)
        out.append(
            {"index": i, "text": head + c.text, "logprobs": lps, "finish_reason": c.finish_reason}
        )
    return {
        **envelope(rid, "text_completion", req.model),
        "choices": out,
        "usage": usage_of(choices, req.n),
    }


async def _stream(
    request: web.Request, state: ServerState, req: CompletionRequest, group: RequestGroup
) -> web.StreamResponse:
    resp = await sse.open_stream(request)
    base = envelope(group.ids[0], "text_completion", req.model)
    choices = [Choice() for _ in group.ids]
    offsets = [0] * len(group.ids)  # characters sent per choice (logprobs' text_offset)
    pending_echo = [req.echo] * len(group.ids)
    try:
        async for i, out in group.outputs():
            choices[i].add(out)
            text, echoed = out.new_text, []
            if pending_echo[i]:
                pending_echo[i] = False
                text = _echo_text(state, req.prompts[i // req.n]) + text
                echoed = _visible(state, out.prompt_token_ids)
            if not (out.new_token_ids or text or out.finished):
                if not group.has_more:
                    await sse.flush(resp)  # nothing to add: send what an earlier output held
                continue
            lps = None
            if req.logprobs is not None:
                lps = completion_logprobs(
                    out.new_logprobs or [], state.token_text, offsets[i], echoed
                )
            offsets[i] += len(text)
            choice = {
                "index": i,
                "text": text,
                "logprobs": lps,
                "finish_reason": out.finish_reason if out.finished else None,
            }
            await sse.send_event(resp, {**base, "choices": [choice]}, flush=not group.has_more)
    except ConnectionError:
        raise  # the client is gone: nothing more can be sent
    except Exception as e:
        await sse.send_error(resp, e)
    await sse.finish_stream(resp, base, usage_of(choices, req.n) if req.include_usage else None)
    return resp
