"""`create_app(engine, config)`: the aiohttp application around one engine.

`engine` is either a `CoreProcess` (the engine running in its own process, what `kiln serve`
uses; see server/core_client.py) or an engine object driven by a thread of this process
(`EngineLoop`; tests use it with small fakes).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator

from aiohttp import web

from server.choices import TokenText
from server.config import ServerConfig
from server.core_client import CoreProcess, EngineCoreClient
from server.engine_loop import EngineLoop
from server.errors import APIError, error_middleware
from server.metrics import ServerMetrics
from server.routes import ROUTES
from server.state import STATE, ServerState


def create_app(engine, config: ServerConfig | None = None) -> web.Application:
    """Build the app; the engine driver starts and stops with it (`cleanup_ctx`)."""
    config = config or ServerConfig()
    metrics = ServerMetrics()
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
    )
    limits = dict(max_queue=config.max_queue, retry_after_s=config.retry_after_s)
    if isinstance(engine, CoreProcess):
        loop = EngineCoreClient(engine, metrics, **limits, step_trace=config.step_trace,
                                shutdown_timeout=config.shutdown_timeout)  # fmt: skip
    else:
        loop = EngineLoop(engine, metrics, **limits)
    app[STATE] = ServerState(
        config=config,
        metrics=metrics,
        loop=loop,
        served_names=config.served_model_names or (loop.model_name,),
        token_text=TokenText(loop.tokenizer),
        started=int(time.time()),
    )
    app.add_routes(ROUTES)
    app.cleanup_ctx.append(_engine_loop)
    return app


async def _engine_loop(app: web.Application) -> AsyncIterator[None]:
    loop = app[STATE].loop
    await loop.start()
    yield
    await loop.stop()


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    """With an API key set, every /v1/ route needs `Authorization: Bearer <key>`."""
    key = request.app[STATE].config.api_key
    routed = getattr(request.match_info, "http_exception", None) is None  # 404/405 say so first
    if key is not None and routed and request.path.startswith("/v1/"):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), key.encode()
        ):
            raise APIError(
                401,
                "missing or wrong API key: send `Authorization: Bearer <key>`",
                code="invalid_api_key",
            )
    return await handler(request)


@web.middleware
async def metrics_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Count every request by route and final status (499: the client went away)."""
    counter = request.app[STATE].metrics.requests
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    try:
        resp = await handler(request)
    except BaseException:
        counter.inc(name, "499")
        raise
    counter.inc(name, str(resp.status))
    return resp
