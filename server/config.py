"""The server's own settings (the engine's live in `kiln.config.EngineConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.errors import KilnError


@dataclass(frozen=True)
class ServerConfig:
    """What `create_app` needs beyond the engine. Validated on construction."""

    served_model_names: tuple[str, ...] = ()  # empty: the engine's `model_name`
    api_key: str | None = None  # None: no auth; else `Authorization: Bearer <key>` on /v1/*
    max_queue: int = 1024  # waiting + running engine requests before 503
    max_body_bytes: int = 4 * 1024 * 1024  # larger request bodies get 413
    shutdown_timeout: float = 10.0  # seconds in-flight requests may finish after SIGTERM
    retry_after_s: int = 1  # the Retry-After header of a 503
    step_trace: Path | None = None  # engine-core servers: one JSON line per step goes here

    def __post_init__(self) -> None:
        if isinstance(self.served_model_names, str | list):
            names = (
                (self.served_model_names,)
                if isinstance(self.served_model_names, str)
                else self.served_model_names
            )
            object.__setattr__(self, "served_model_names", tuple(names))
        _check(
            all(isinstance(n, str) and n for n in self.served_model_names),
            "served_model_names",
            self.served_model_names,
            "names must be non-empty strings",
        )
        _check(
            self.api_key is None or bool(self.api_key),
            "api_key",
            self.api_key,
            "must be a non-empty string, or None to turn auth off",
        )
        _check(self.max_queue >= 1, "max_queue", self.max_queue, "must be >= 1")
        _check(
            self.max_body_bytes >= 1024, "max_body_bytes", self.max_body_bytes, "must be >= 1024"
        )
        _check(
            self.shutdown_timeout >= 0,
            "shutdown_timeout",
            self.shutdown_timeout,
            "must be >= 0 seconds",
        )
        _check(self.retry_after_s >= 0, "retry_after_s", self.retry_after_s, "must be >= 0")


def _check(ok: bool, name: str, value: object, fix: str) -> None:
    if not ok:
        raise KilnError(f"ServerConfig.{name}={value!r}: {fix}")
