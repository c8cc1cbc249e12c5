"""Start a real `kiln serve` process on loopback and talk to it (no pytest here).

The server binds port 0 and prints `kiln serve: listening on URL` once ready; we read the
URL from its stdout, so there is no race over picking a free port.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from server.metrics import parse_metrics

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 240.0  # a cold compile on a 2-core CI machine can be slow


class ServeProcess:
    """`python -m kiln serve --port 0 ARGS...` with its stdout/stderr captured."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        # Server behaviour does not depend on the lowering: run the eager reference unless a
        # test asks for compilation (tests/lowering covers serving a compiled artifact).
        compile_flag = (
            [] if any(a.startswith("--compile") for a in args) else ["--compile", "never"]
        )
        # KILN_TEST_API_SERVERS=N runs every test server with N API server processes.
        servers = os.environ.get("KILN_TEST_API_SERVERS")
        extra = ["--api-servers", servers] if servers and "--api-servers" not in args else []
        self.args = ["--port", "0", *compile_flag, *extra, *args]
        self.env = {**os.environ, **(env or {})}
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.url = ""
        self._ready = threading.Event()
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiln", "serve", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(
            target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True
        ).start()
        threading.Thread(
            target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True
        ).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"kiln serve did not start:\n{self.stderr_text()}")
        return self

    def _pump(self, stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            if "listening on http://" in line:
                self.url = line.rsplit(" ", 1)[-1].strip()
                self._ready.set()

    def stderr_text(self) -> str:
        return "".join(self.stderr)

    def terminate(self, timeout: float) -> int:
        """SIGTERM, then wait; returns the exit code (raises on timeout)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(30)
            except subprocess.TimeoutExpired:
                self.kill()


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request (for what the openai client cannot send: bad JSON, odd verbs)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        conn.request(
            method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
        )
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def metrics(url: str) -> dict[str, float]:
    status, _, body = request(url, "GET", "/metrics")
    assert status == 200, body
    return parse_metrics(body.decode())


def wait_for_metrics(url: str, predicate, timeout: float = 60.0) -> dict[str, float]:
    """Poll /metrics until `predicate(values)` holds; returns the last values either way."""
    deadline = time.monotonic() + timeout
    values = metrics(url)
    while not predicate(values) and time.monotonic() < deadline:
        time.sleep(0.1)
        values = metrics(url)
    return values


def engine_core_pid(server_pid: int) -> int:
    """The child that runs `runtime.engine_core.run_core`: forked (its command line is the
    server's) or spawned (`spawn_main`), never multiprocessing's resource tracker."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    server = Path(f"/proc/{server_pid}/cmdline").read_bytes()
    for pid in map(int, children):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if cmdline == server or (b"spawn_main" in cmdline and b"resource_tracker" not in cmdline):
            return pid
    raise AssertionError(f"no engine core among the children {children} of {server_pid}")
