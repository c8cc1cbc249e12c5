"""`serve_core`: the API server processes of one spawned engine core, from connect to exit.

`kiln serve` and the serving benchmarks run this after spawning the core. With `count` > 1 it
binds the listening sockets and forks API servers 1..N-1 first (server/api_servers.py says
why and how they share the work); then this process, API server 0, connects to the core,
serves, and on SIGTERM drains, waits for the others and stops the core.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from kiln.errors import KilnError
from runtime.engine_core import SpawnedCore
from server.api_servers import ApiServers, keep_own, listen_sockets
from server.app import create_app
from server.config import ServerConfig
from server.core_client import CoreProcess, connect_core
from server.runner import serve


def serve_core(
    spawned: SpawnedCore,
    config: ServerConfig,
    host: str,
    port: int,
    *,
    on_connect: Callable[[CoreProcess], None] | None = None,
    on_ready: Callable[[str, CoreProcess], None] | None = None,
) -> int:
    """Serve the core's engine until SIGTERM / SIGINT (0) or a failure (1). `on_connect(core)`
    runs in every API server once its core is ready, `on_ready(url, core)` in API server 0
    once it listens."""
    count = spawned.frontends
    others, groups = None, []
    try:
        # A SIGTERM held since the core's start fires here, where it is cleaned up after.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        groups = listen_sockets(host, port, count)  # a bad address fails before the build
        if count > 1:  # before any ZMQ context or event loop exists: API servers fork
            others = ApiServers()
            others.start(count, lambda index: _api_server(
                spawned, index, keep_own(groups, index), config, host, on_connect))  # fmt: skip
        sockets = keep_own(groups, 0)
        core = connect_core(spawned)
        core.others = others
        if on_connect is not None:
            on_connect(core)
        app = create_app(core, config)
        ready = None if on_ready is None else lambda url: on_ready(url, core)
        return asyncio.run(serve(app, host, sockets, on_ready=ready))
    except BaseException:  # nothing may be left running: the core waits for its Shutdown
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut this short
        if spawned.process.is_alive():
            spawned.process.kill()  # first: the others then see it gone and exit at once
        if others is not None:
            others.kill()
        for sock in (s for group in groups for s in group):
            sock.close()
        shutil.rmtree(spawned.folder, ignore_errors=True)
        raise


def _api_server(spawned, index, sockets, config, host, on_connect) -> int:
    """API server `index` (1..N-1), forked from API server 0: its own channels to the core,
    its own event loop, the shared listening sockets."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s %(name)s[api server {index}]: %(message)s"))  # fmt: skip
    try:
        core = connect_core(spawned, index)
    except KilnError:
        return 1  # API server 0 says why
    if on_connect is not None:
        on_connect(core)
    if config.step_trace is not None:
        config = dataclasses.replace(config, step_trace=Path(f"{config.step_trace}.{index}"))
    app = create_app(core, config)
    return asyncio.run(serve(app, host, sockets, signals=(signal.SIGTERM,)))
