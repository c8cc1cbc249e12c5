"""The route table, and the small read-only routes (models, health, metrics, dashboard)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from server.chat import create_chat_completion
from server.completions import create_completion
from server.errors import APIError
from server.state import STATE

log = logging.getLogger("kiln.server")


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    data = [
        {
            "id": name,
            "object": "model",
            "created": state.started,
            "owned_by": "kiln",
            "max_model_len": state.max_model_len,
        }
        for name in state.served_names
    ]
    return web.json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.loop.dead_reason is not None:
        raise APIError(503, f"the engine is down: {state.loop.dead_reason}", code="engine_dead")
    if not state.loop.accepting:
        raise APIError(503, "the server is shutting down", code="shutting_down")
    return web.json_response({"status": "ok", "active_requests": state.loop.num_active})


async def metrics(request: web.Request) -> web.Response:
    text = request.app[STATE].loop.metrics_text()
    return web.Response(
        text=text, content_type="text/plain", headers={"X-Prometheus-Format": "0.0.4"}
    )


async def dashboard(request: web.Request) -> web.Response:
    """The compile/bench dashboard (`kiln dashboard` renders the same page to a file)."""
    from perf_dashboard.report import render_html
    from perf_dashboard.store import DashboardStore

    page = await asyncio.to_thread(lambda: render_html(DashboardStore(), show_path=False))
    return web.Response(text=page, content_type="text/html")


ROUTES = [
    web.post("/v1/completions", create_completion),
    web.post("/v1/chat/completions", create_chat_completion),
    web.get("/v1/models", list_models),
    web.get("/health", health),
    web.get("/metrics", metrics),
    web.get("/dashboard", dashboard),
]
