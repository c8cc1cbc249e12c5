"""The app's typed state: one `web.AppKey` holding everything handlers share."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from server.choices import TokenText
from server.config import ServerConfig
from server.metrics import ServerMetrics
from server.tracker import RequestTracker


@dataclass
class ServerState:
    config: ServerConfig
    metrics: ServerMetrics
    loop: RequestTracker  # the engine driver: EngineCoreClient or EngineLoop
    served_names: tuple[str, ...]
    token_text: TokenText
    started: int  # unix time, the `created` of /v1/models

    @property
    def tokenizer(self):
        return self.loop.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.loop.max_model_len


STATE = web.AppKey("kiln_state", ServerState)
