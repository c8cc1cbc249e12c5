"""Running an app on a socket until SIGTERM/SIGINT, then draining it gracefully.

Shutdown order: stop accepting (new requests get 503, the listening socket closes), let
in-flight requests finish for up to `shutdown_timeout` seconds, abort the rest (their streams
end with `finish_reason: "abort"`), then close connections and stop the engine.

If the engine dies (its process exits), in-flight requests fail at once, /health answers 503
for `DEAD_LINGER_S` so probes and load balancers see it, and `serve` returns 1.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable

from aiohttp import web

from server.state import STATE

log = logging.getLogger("kiln.server")
_CLOSE_TIMEOUT_S = 2.0  # after aborting, handlers only need to write their last bytes
DEAD_LINGER_S = 1.0


def make_runner(app: web.Application) -> web.AppRunner:
    """A runner whose handlers are cancelled when their client disconnects, so the finally
    blocks abort engine requests and free KV blocks at once."""
    return web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=_CLOSE_TIMEOUT_S, access_log=None
    )


async def serve(
    app: web.Application,
    host: str,
    sockets: list[socket.socket],
    on_ready: Callable[[str], None] | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Serve on the bound `sockets` (`server.api_servers.listen_sockets`; `host` names them
    in the URL) until SIGTERM or SIGINT (returns 0 once drained and stopped) or until the
    engine dies (returns 1). The engine driver stops with the app, also when a socket cannot
    listen."""
    stop = asyncio.Event()  # first: a signal from here on drains, whatever is starting
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)  # a forked API server's were held
    runner = make_runner(app)
    await runner.setup()  # starts the engine loop (cleanup_ctx)
    try:
        sites = [web.SockSite(runner, sock) for sock in sockets]
        for site in sites:
            await site.start()
        url = f"http://{_display_host(host)}:{bound_port(sites[0])}"
        if on_ready is not None:
            on_ready(url)
        died = app[STATE].loop.died
        await _first(stop.wait(), died.wait())
        app[STATE].loop.on_stop()
        if died.is_set():
            log.error("%s: the server stops (exit code 1)", app[STATE].loop.dead_reason)
            await asyncio.sleep(DEAD_LINGER_S)
        await drain(app, sites)
    finally:
        await runner.cleanup()
    log.info("stopped")
    return 1 if app[STATE].loop.died.is_set() else 0


async def _first(*waits) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


async def drain(app: web.Application, sites: list[web.BaseSite]) -> None:
    state = app[STATE]
    timeout = state.config.shutdown_timeout
    state.loop.stop_accepting()
    for site in sites:
        await site.stop()
    active = state.loop.num_active
    log.info("shutting down: waiting up to %.1f s for %d active requests", timeout, active)
    if not await state.loop.wait_idle(timeout):
        log.warning("shutdown timeout: aborting %d requests", state.loop.num_active)
        state.loop.abort_all()


def bound_port(site: web.BaseSite) -> int:
    server = site._server  # aiohttp keeps the asyncio Server here; port 0 means "pick one"
    return server.sockets[0].getsockname()[1] if server and server.sockets else site._port


def _display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
