"""Server-sent events, the wire format of `stream: true`."""

from __future__ import annotations

import msgspec
from aiohttp import web

# Compact UTF-8 JSON, several times faster than `json.dumps` for a chunk's small dict: the
# server frames one per stream per engine step. A float that is not finite (a -inf logprob)
# becomes null, where `json.dumps` writes `-Infinity`, which is not JSON.
_encode = msgspec.json.Encoder().encode


def dumps(obj) -> str:
    """The same JSON as a string, for `web.json_response(..., dumps=sse.dumps)`: a whole
    response and its streamed chunks encode alike."""
    return _encode(obj).decode()


# Bytes framed but not yet written (see `send_event(flush=False)`); older aiohttp has no
# typed response keys and takes a string.
_HELD = web.ResponseKey("kiln_sse_held", bytes) if hasattr(web, "ResponseKey") else "kiln_sse_held"


async def open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not hold tokens back
        }
    )
    await resp.prepare(request)
    return resp


async def send_event(resp: web.StreamResponse, payload: dict, *, flush: bool = True) -> None:
    """Frame one event; with `flush=False` it waits in the response's buffer for the next
    flushing send (a handler that finds more outputs queued writes them all at once, so a
    server behind the engine catches up in fewer, larger writes)."""
    data = b"data: " + _encode(payload) + b"\n\n"
    held = resp.get(_HELD)
    if not flush:
        resp[_HELD] = data if held is None else held + data
        return
    if held is not None:
        del resp[_HELD]
        data = held + data
    await resp.write(data)


async def flush(resp: web.StreamResponse) -> None:
    """Write what `send_event(flush=False)` held back."""
    held = resp.pop(_HELD, None)
    if held is not None:
        await resp.write(held)


async def send_done(resp: web.StreamResponse) -> None:
    await flush(resp)
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()


async def send_error(resp: web.StreamResponse, error: Exception) -> None:
    """The engine failed after the headers went out: report it in-band, OpenAI-shaped."""
    await send_event(
        resp,
        {
            "error": {
                "message": f"generation failed: {error}",
                "type": "server_error",
                "param": None,
                "code": "internal_error",
            }
        },
    )


async def finish_stream(resp: web.StreamResponse, base: dict, usage: dict | None) -> None:
    """The last usage chunk (when asked for with stream_options.include_usage), then [DONE]."""
    if usage is not None:
        await send_event(resp, {**base, "choices": [], "usage": usage})
    await send_done(resp)
