"""`POST /v1/chat/completions`: messages through the tokenizer's chat template."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from aiohttp import web

from server import sse
from server.choices import Choice, chat_logprobs, collect, envelope, usage_of
from server.errors import APIError
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

ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class ChatRequest:
    model: str
    n: int
    stream: bool
    include_usage: bool
    logprobs: int | None  # None: off; k: the sampled token plus k alternatives


def parse_messages(value: object) -> list[dict]:
    """Messages as the template expects them: role + string content (text parts joined)."""
    if not isinstance(value, list) or not value:
        raise bad("messages", "must be a non-empty list of {role, content} objects")
    return [_message(m, i) for i, m in enumerate(value)]


def _message(m: object, i: int) -> dict:
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise bad(f"messages[{i}]", f"must be an object whose `role` is one of {list(ROLES)}")
    content = m.get("content")
    if isinstance(content, list):  # content parts: only text is supported
        if not all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content
        ):
            raise bad(f"messages[{i}].content", "parts must all be {type: text, text: string}")
        content = "".join(p["text"] for p in content)
    if content is None and m["role"] == "assistant":
        content = ""
    if not isinstance(content, str):
        raise bad(f"messages[{i}].content", "must be a string or a list of text parts")
    return {"role": m["role"], "content": content}


def render_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Template -> text -> ids; the template writes its own special tokens (BOS included)."""
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as e:  # jinja raises for messages the template refuses
        raise APIError(
            400,
            f"the chat template rejected the messages: {e}",
            param="messages",
            code="invalid_messages",
        ) from None
    return tokenizer.encode(text, add_special_tokens=False)


def _logprobs_setting(body: Body) -> int | None:
    wanted = body.bool("logprobs")
    top = body.int("top_logprobs", None, 0, 20)
    if top is not None and not wanted:
        raise bad("top_logprobs", "needs `logprobs: true`")
    return (top or 0) if wanted else None


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = Body(await read_json(request))
    body.reject("tools", "functions")
    stream = body.bool("stream")
    req = ChatRequest(
        model=check_model(body, state.served_names),
        n=body.int("n", 1, 1, MAX_N),
        stream=stream,
        include_usage=body.include_usage(stream),
        logprobs=_logprobs_setting(body),
    )
    prompt = render_prompt(state.tokenizer, parse_messages(body.get("messages")))
    max_tokens = max_tokens_field(body, "max_completion_tokens", "max_tokens")
    params = sampling_params(
        body,
        max_tokens=max_tokens,
        logprobs=req.logprobs,
        default_max_tokens=max(1, state.max_model_len - len(prompt)),
    )
    group = await state.loop.submit(
        f"chatcmpl-{uuid.uuid4().hex}", [prompt] * req.n, seeded(params, req.n)
    )
    try:
        if req.stream:
            return await _stream(request, state, req, group)
        body = _response(state, req, group.ids[0], await collect(group))
        return web.json_response(body, dumps=sse.dumps)
    finally:
        state.loop.abort(group)  # a no-op once finished; frees KV blocks on disconnect


def _response(state: ServerState, req: ChatRequest, rid: str, choices: list[Choice]) -> dict:
    out = [
        {
            "index": i,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": chat_logprobs(c.logprobs, state.token_text)
            if req.logprobs is not None
            else None,
            "finish_reason": c.finish_reason,
        }
        for i, c in enumerate(choices)
    ]
    return {
        **envelope(rid, "chat.completion", req.model),
        "choices": out,
        "usage": usage_of(choices, req.n),
    }


async def _stream(
    request: web.Request, state: ServerState, req: ChatRequest, group: RequestGroup
) -> web.StreamResponse:
    resp = await sse.open_stream(request)
    base = envelope(group.ids[0], "chat.completion.chunk", req.model)
    choices = [Choice() for _ in group.ids]
    roled = [False] * len(group.ids)
    try:
        async for i, out in group.outputs():
            choices[i].add(out)
            if not (out.new_token_ids or out.new_text or out.finished):
                if not group.has_more:
                    await sse.flush(resp)  # nothing to add: send what an earlier output held
                continue
            # The role chunk leads each choice, sent with its first token (as vLLM sends it), so
            # a client that times the first chunk times a token, not the request's admission.
            if not roled[i]:
                roled[i] = True
                await sse.send_event(resp, _role_chunk(base, i), flush=False)
            lps = None
            if req.logprobs is not None:
                lps = chat_logprobs(out.new_logprobs or [], state.token_text)
            # Tokens that completed no character yet still get their chunk, content "".
            delta = {"content": out.new_text} if out.new_token_ids or out.new_text else {}
            await sse.send_event(
                resp,
                {
                    **base,
                    "choices": [
                        {
                            "index": i,
                            "delta": delta,
                            "logprobs": lps,
                            "finish_reason": out.finish_reason if out.finished else None,
                        }
                    ],
                },
                flush=not group.has_more,
            )
    except ConnectionError:
        raise  # the client is gone: nothing more can be sent
    except Exception as e:
        await sse.send_error(resp, e)
    await sse.finish_stream(resp, base, usage_of(choices, req.n) if req.include_usage else None)
    return resp


def _role_chunk(base: dict, index: int) -> dict:
    delta = {"role": "assistant", "content": ""}
    return {**base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                 "finish_reason": None}]}  # fmt: skip
