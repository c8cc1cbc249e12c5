"""Server-sent events, the wire format of `stream: true`."""

from __future__ import annotations

import json

from aiohttp import web


async def open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not hold tokens back
        }
    )
    await resp.prepare(request)
    return resp


async def send_event(resp: web.StreamResponse, payload: dict) -> None:
    await resp.write(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")


async def send_done(resp: web.StreamResponse) -> None:
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
