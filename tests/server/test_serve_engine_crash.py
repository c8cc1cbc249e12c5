"""End to end: the engine-core process dying fails requests, turns /health 503, and the
server exits non-zero with a message that says so."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from tests.server.harness import ServeProcess, engine_core_pid, request

pytestmark = pytest.mark.timeout(300)


def stream_events(url: str, sink: list[dict], started: threading.Event) -> None:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    body = {"prompt": [5, 6, 7], "max_tokens": 1000, "ignore_eos": True, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    for line in resp:
        if line.startswith(b"data: {"):
            sink.append(json.loads(line[6:]))
            started.set()


def test_core_crash_makes_health_503_and_the_server_exit_nonzero():
    proc = ServeProcess("--max-model-len", "1100").start()
    try:
        status, _, _ = request(proc.url, "GET", "/health")
        assert status == 200
        events: list[dict] = []
        started = threading.Event()
        reader = threading.Thread(target=stream_events, args=(proc.url, events, started))
        reader.start()
        assert started.wait(60)
        os.kill(engine_core_pid(proc.proc.pid), signal.SIGKILL)
        reader.join(30)
        status, _, body = request(proc.url, "GET", "/health")  # within the 1 s linger
        assert status == 503 and json.loads(body)["error"]["code"] == "engine_dead"
        code = proc.proc.wait(30)
    finally:
        proc.kill()
    assert code == 1
    assert "error" in events[-1] and "engine core process exited" in events[-1]["error"]["message"]
    assert "the engine core process exited with code -9" in proc.stderr_text()
