"""The app's typed state: one `web.AppKey` holding everything handlers share."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from server.choices import TokenText
from server.config import ServerConfig
from server.engine_loop import EngineLoop
from server.metrics import ServerMetrics


@dataclass
class ServerState:
    engine: object  # runtime.engine.Engine or anything honouring its contract
    config: ServerConfig
    metrics: ServerMetrics
    loop: EngineLoop
    served_names: tuple[str, ...]
    token_text: TokenText
    started: int  # unix time, the `created` of /v1/models

    @property
    def tokenizer(self):
        return self.engine.tokenizer


STATE = web.AppKey("kiln_state", ServerState)
