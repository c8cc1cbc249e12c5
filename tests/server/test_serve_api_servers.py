"""End to end: `kiln serve --api-servers N` streams every request whole through whichever
API server takes it, reports server-wide /metrics, drains on SIGTERM, and fails as one
server when the core or an API server dies."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.server.harness import ServeProcess, wait_for_metrics

pytestmark = pytest.mark.timeout(300)
COMPLETIONS_OK = 'kiln_http_requests_total{route="/v1/completions",status="200"}'


def pids(proc: ServeProcess) -> tuple[int, list[int]]:
    """(engine core, API servers 1..N-1) from the start-up log line."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = re.search(r"engine core pid (\d+), API servers 1\.\. pids \[([\d, ]+)\]",
                      proc.stderr_text())  # fmt: skip
        if m:
            return int(m[1]), [int(p) for p in m[2].split(",")]
        time.sleep(0.05)
    raise AssertionError(proc.stderr_text())


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or "State:\tZ" in _status(pid)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""


def stream(url: str, seed: int, max_tokens: int) -> list[dict]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    body = {"prompt": [seed % 400 + 5, 17, 42], "max_tokens": max_tokens, "ignore_eos": True,
            "stream": True, "seed": seed}  # fmt: skip
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    events = [json.loads(line[6:]) for line in resp if line.startswith(b"data: {")]
    conn.close()
    return events


def test_three_api_servers_stream_every_request_and_report_server_wide_metrics():
    proc = ServeProcess("--api-servers", "3").start()
    try:
        core, others = pids(proc)
        assert len(others) == 2 and core not in others
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda i: stream(proc.url, i, 16), range(24)))
        for events in results:
            tokens = [e for e in events if e["choices"] and e["choices"][0]["text"] is not None]
            assert len(tokens) == 16 and events[-1]["choices"][0]["finish_reason"] == "length"
        # whichever API server answers the scrape counts the others' requests too
        values = wait_for_metrics(proc.url, lambda v: v.get(COMPLETIONS_OK) == 24, timeout=10)
        assert values[COMPLETIONS_OK] == 24
        assert values["kiln_generation_tokens_total"] == 24 * 16
        steps = values["kiln_engine_step_duration_seconds_count"]
        assert 16 <= steps <= values["kiln_engine_steps_total"]  # each step counted once
        code = proc.terminate(60)
    finally:
        proc.kill()
    assert code == 0, proc.stderr_text()
    assert all(gone(pid) for pid in (core, *others))
    assert proc.stderr_text().count("INFO kiln.server") >= 3  # API servers 1, 2 log as such
    assert "[api server 2]: stopped" in proc.stderr_text()


@pytest.mark.parametrize("victim", ["api server", "engine core"])
def test_a_dead_api_server_or_core_stops_the_whole_server_with_exit_code_1(victim):
    proc = ServeProcess("--api-servers", "2").start()
    try:
        core, (other,) = pids(proc)
        assert stream(proc.url, 1, 4)
        os.kill(other if victim == "api server" else core, signal.SIGKILL)
        code = proc.proc.wait(60)
    finally:
        proc.kill()
    assert code == 1, proc.stderr_text()
    expected = ("API server process 1 exited with code -9" if victim == "api server"
                else "the engine core process exited with code -9")  # fmt: skip
    assert expected in proc.stderr_text()
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in (core, other)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in (core, other)), "a process outlived kiln serve"


def test_bad_api_server_counts_are_refused_before_the_engine_starts():
    for bad in ("0", "65"):
        proc = ServeProcess("--api-servers", bad)
        with pytest.raises(RuntimeError, match="--api-servers"):
            proc.start()


def test_an_api_server_stopped_on_its_own_leaves_the_rest_serving():
    """SIGTERM to API server 1 alone: it drains and exits 0, the core forgets it, and the
    others go on serving every new connection."""
    proc = ServeProcess("--api-servers", "2").start()
    try:
        core, (other,) = pids(proc)
        os.kill(other, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not gone(other) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(other)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: stream(proc.url, i, 8), range(8)))
        assert all(events[-1]["choices"][0]["finish_reason"] == "length" for events in results)
        assert "API server process 1 exited with code 0" in proc.stderr_text()
        code = proc.terminate(60)
    finally:
        proc.kill()
    assert code == 0, proc.stderr_text()
    assert gone(core)


def test_max_queue_counts_the_requests_of_every_api_server():
    """`--max-queue 2` with two API servers: two streams running (wherever they landed), a
    third request gets the 503 `queue_full` answer from whichever API server takes it."""
    import threading

    from tests.server.harness import request

    proc = ServeProcess("--api-servers", "2", "--max-queue", "2", "--max-model-len", "1100").start()
    started = [threading.Event(), threading.Event()]
    done = threading.Event()

    def long_stream(i: int) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(proc.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        body = {"prompt": [5 + i, 6], "max_tokens": 1000, "ignore_eos": True, "stream": True}
        conn.request("POST", "/v1/completions", json.dumps(body),
                     {"Content-Type": "application/json"})  # fmt: skip
        for line in conn.getresponse():
            if line.startswith(b"data: {"):
                started[i].set()
            if done.is_set():
                break
        conn.close()

    threads = [threading.Thread(target=long_stream, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        assert all(e.wait(60) for e in started)
        for _ in range(4):  # new connections: both API servers answer some of them
            status, headers, body = request(proc.url, "POST", "/v1/completions",
                                            {"prompt": [5], "max_tokens": 2})  # fmt: skip
            assert status == 503, body
            assert json.loads(body)["error"]["code"] == "queue_full"
            assert headers["retry-after"] == "1"
    finally:
        done.set()
        proc.kill()
        for t in threads:
            t.join(30)


@pytest.mark.parametrize("servers", ["1", "3"])
def test_sigterm_while_the_engine_builds_stops_every_process(servers):
    """SIGTERM before ready: `kiln serve` exits 143 at once and leaves no engine core or API
    server behind (the core would otherwise go on building an engine no one serves)."""
    import subprocess
    import sys

    from tests.server.harness import ROOT

    proc = subprocess.Popen([sys.executable, "-m", "kiln", "serve", "--port", "0", "--compile",
                             "never", "--api-servers", servers], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        children: list[int] = []
        deadline = time.monotonic() + 30
        while len(children) < int(servers) and time.monotonic() < deadline:
            time.sleep(0.05)  # the core, then API servers 1..N-1
            path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            children = [int(p) for p in path.read_text().split()] if path.exists() else []
        assert len(children) >= int(servers)
        time.sleep(0.3)  # the core is importing torch now; far from ready
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        stderr = proc.stderr.read()
    finally:
        proc.kill()
    assert code == 143, stderr
    assert "stopped by SIGTERM before it was ready" in stderr
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in children), "a process outlived kiln serve"


@pytest.mark.parametrize("servers", ["1", "2"])
def test_a_port_in_use_is_a_clear_error_at_once_with_no_process_left(servers):
    """The port is bound before the engine builds: a taken one fails in a second, not after
    the build (and no engine core is left waiting)."""
    import socket
    import subprocess
    import sys

    from tests.server.harness import ROOT

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = str(taken.getsockname()[1])
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "kiln", "serve", "--compile", "never",
                               "--port", port, "--api-servers", servers], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        elapsed = time.monotonic() - t0
    finally:
        taken.close()
    assert proc.returncode == 2, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 20  # the engine (torch's import alone) was not waited for
