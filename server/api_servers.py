"""Several API server processes in front of one engine core (`kiln serve --api-servers N`).

One Python process frames, encodes and writes some 20,000-40,000 SSE chunks a second; a
small model on a fast GPU produces more tokens than that at 32 or 128 streams. With N API
servers, each process owns the connections it accepted, its requests' streams and its own
pair of channels to the core, so N event loops share the per-chunk work.

    kiln serve (API server 0) --- forks ---> API servers 1..N-1
          |  listening sockets on one port, one set per API server (SO_REUSEPORT)
          +------ in0/out0 ---- core ---- in{i}/out{i} --+

API server 0 is `kiln serve`'s own process. Once it has started the core, it binds the
listening sockets and forks the others, before any of them opens a ZMQ context or an event
loop (a fork copies only the calling thread). Each accepts on its own sockets of one port,
and the kernel spreads new connections over them (`listen_sockets`). API server 0
supervises: SIGTERM reaches it, it forwards SIGTERM to the others (they ignore SIGINT, so
Ctrl-C drains through it too), each drains its own requests, and it stops the core once
they have exited. When one exits it tells the core (`FrontendGone`); one that drained and
exited 0 leaves the rest serving, any other exit fails the whole server (/health 503,
`kiln serve` exits 1). Each API server follows the core's health itself (a Linux pidfd), so
a crashed core fails every stream at once, and the kernel kills API servers 1..N-1 if API
server 0 dies.

/metrics answers for the whole server whichever process takes the scrape: every API server
publishes its counters and histograms to the core's folder every `PUBLISH_S`, and the
scraped one adds the others' last copies to its own (`SharedMetrics`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from kiln.errors import KilnError
from server.metrics import ServerMetrics

log = logging.getLogger("kiln.server")
PUBLISH_S = 0.25  # how stale another API server's counters in /metrics may be, at most
LISTEN_BACKLOG = 128  # as aiohttp's sites


def listen_sockets(host: str, port: int, count: int) -> list[list[socket.socket]]:
    """For each of `count` API servers, its own listening TCP sockets, one per address `host`
    resolves to (as asyncio's `create_server` binds them, skipping an address family the host
    cannot bind), all on one port (port 0 picks it). Several API servers get theirs with
    SO_REUSEPORT: the kernel spreads new connections evenly over them. Processes accepting
    on one shared socket instead would race for every connection, and the first to wake takes
    most of them.

    The sockets listen at once, so a second server cannot bind the port while this one
    builds its engine (a connection made before an API server serves waits in the backlog).
    SO_REUSEPORT would let another process of this user join the port, so several API
    servers first probe it with a plain socket: one that something listens on is refused."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise KilnError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    addrs = list(
        dict.fromkeys((family, kind, proto, addr) for family, kind, proto, _, addr in infos)
    )
    groups: list[list[socket.socket]] = [[] for _ in range(count)]
    error: OSError | None = None
    for family, kind, proto, addr in addrs:
        if port == 0 and groups[0]:  # every address on the port the first one got
            addr = (addr[0], groups[0][0].getsockname()[1], *addr[2:])
        try:
            bound = _bind_all(family, kind, proto, addr, count)
        except OSError as e:
            if e.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                error = error or e  # e.g. IPv6 off: serve the addresses that bind
                continue
            error = e
            break
        for group, sock in zip(groups, bound, strict=True):
            group.append(sock)
    else:
        if groups[0]:
            return groups
    for sock in (s for group in groups for s in group):
        sock.close()
    raise KilnError(f"cannot listen on {host}:{port}: {error.strerror}")


def _bind_all(family, kind, proto, addr, count: int) -> list[socket.socket]:
    """`count` listening sockets on one address (closed again if one fails)."""
    shared = count > 1
    if shared and addr[1] != 0:
        with _socket(family, kind, proto, reuse_port=False) as probe:
            probe.bind(addr)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = _socket(family, kind, proto, reuse_port=shared)
            socks.append(sock)
            sock.bind(addr)
            sock.listen(LISTEN_BACKLOG)
            addr = sock.getsockname()  # port 0: the rest take the port this one got
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def _socket(family, kind, proto, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def keep_own(groups: list[list[socket.socket]], index: int) -> list[socket.socket]:
    """API server `index`'s sockets; closes this process's copies of the others' (a socket
    held open by a process that does not accept on it would strand the connections the
    kernel hands to it once its own API server has exited)."""
    for i, group in enumerate(groups):
        if i != index:
            for sock in group:
                sock.close()
    return groups[index]


class PeerProcess:
    """A process this one did not start, followed by pid through a Linux pidfd (readable
    once it exits): the engine core as API servers 1..N-1 see it. Its exit code is not
    ours to read."""

    exitcode = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sentinel = os.pidfd_open(pid)

    def is_alive(self) -> bool:
        return not select.select([self.sentinel], [], [], 0)[0]

    def join(self, timeout: float | None = None) -> None:
        select.select([self.sentinel], [], [], timeout)


class ApiServers:
    """API servers 1..N-1 as API server 0 starts, watches and stops them."""

    def __init__(self) -> None:
        self.processes: list[multiprocessing.Process] = []
        self.stopping = False

    def start(self, count: int, main: Callable[[int], int]) -> None:
        """Fork `count - 1` processes; process i runs `main(i)` and exits with its code."""
        ctx = multiprocessing.get_context("fork")
        for i in range(1, count):
            proc = ctx.Process(target=_run, args=(main, i), name=f"kiln-api-server-{i}")
            proc.start()
            self.processes.append(proc)

    def watch(self, on_exit: Callable[[int, int | None], None]) -> None:
        """Call `on_exit(index, exit code)` from the running loop when one exits."""
        loop = asyncio.get_running_loop()
        for i, proc in enumerate(self.processes, start=1):
            loop.add_reader(proc.sentinel, self._exited, i, proc, on_exit)

    def _exited(self, index: int, proc, on_exit: Callable[[int, int | None], None]) -> None:
        asyncio.get_running_loop().remove_reader(proc.sentinel)
        proc.join(1)
        on_exit(index, proc.exitcode)

    def terminate(self) -> None:
        """Ask every one to drain and exit (SIGTERM)."""
        self.stopping = True
        for proc in self.processes:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    async def wait(self, timeout: float) -> bool:
        """Wait for all to exit (killing any left after `timeout` in all); whether all
        exited 0."""
        self.terminate()
        deadline = time.monotonic() + timeout
        clean = True
        for proc in self.processes:
            await asyncio.to_thread(proc.join, max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("API server %s did not stop in %.0f s; killing it", proc.name, timeout)
                proc.kill()
                await asyncio.to_thread(proc.join, 5)
            clean = clean and proc.exitcode == 0
        return clean

    def kill(self) -> None:
        """Start-up failed: they exit on their own (the core told each); kill any that hang."""
        for proc in self.processes:
            proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _run(main: Callable[[int], int], index: int) -> None:
    # Ctrl-C reaches the whole process group; API server 0 forwards SIGTERM, once. A SIGTERM
    # waits (blocked) until the event loop's handler drains: `serve` unblocks it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    _die_with_parent()
    raise SystemExit(main(index))


def _die_with_parent() -> None:
    """SIGKILL this process when API server 0 dies without stopping it (Linux prctl)."""
    import ctypes

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


class SharedMetrics:
    """The server-wide /metrics of several API servers (see the module's docstring)."""

    def __init__(self, folder: str, index: int, count: int) -> None:
        self.folder, self.index, self.count = Path(folder), index, count
        self._encoder = msgspec.msgpack.Encoder()

    def _path(self, index: int) -> Path:
        return self.folder / f"metrics-{index}.msgpack"

    def publish(self, metrics: ServerMetrics) -> None:
        tmp = self._path(self.index).with_suffix(".tmp")
        tmp.write_bytes(self._encoder.encode(metrics.state()))
        os.replace(tmp, self._path(self.index))

    def merged(self, metrics: ServerMetrics) -> ServerMetrics:
        """This process's live figures plus every other API server's last published ones.
        Its own are published first, so a later scrape that another API server answers
        counts at least these: the server-wide counters never go back."""
        try:
            self.publish(metrics)
        except OSError:
            log.debug("publishing metrics failed", exc_info=True)
        total = ServerMetrics()
        total.add_state(metrics.state())
        for i in range(self.count):
            if i == self.index:
                continue
            try:
                total.add_state(msgspec.msgpack.decode(self._path(i).read_bytes()))
            except (OSError, msgspec.DecodeError):
                continue  # not published yet, or gone
        return total

    async def run(self, metrics: ServerMetrics) -> None:
        """Publish until cancelled."""
        while True:
            try:
                self.publish(metrics)
            except OSError:
                log.debug("publishing metrics failed", exc_info=True)
            await asyncio.sleep(PUBLISH_S)
