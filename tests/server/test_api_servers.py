"""Several API server processes: their listening sockets and their merged /metrics."""

from __future__ import annotations

import socket

import pytest

from kiln.errors import KilnError
from server.api_servers import SharedMetrics, keep_own, listen_sockets
from server.metrics import ServerMetrics, parse_metrics


def test_each_api_server_gets_its_own_sockets_on_one_port():
    groups = listen_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for group in groups for sock in group}
        assert len(groups) == 3 and all(len(g) == 1 for g in groups) and len(ports) == 1
        fds = {sock.fileno() for group in groups for sock in group}
        assert len(fds) == 3  # three sockets, not one shared
        # a connection is accepted by exactly one of them
        port = ports.pop()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            for group in groups:
                group[0].settimeout(0.2)
            accepted = []
            for group in groups:
                try:
                    conn, _ = group[0].accept()
                    accepted.append(conn)
                except TimeoutError:
                    pass
            assert len(accepted) == 1
            accepted[0].close()
    finally:
        for group in groups:
            for sock in group:
                sock.close()


def test_keep_own_closes_the_other_api_servers_sockets():
    groups = listen_sockets("127.0.0.1", 0, 2)
    own = keep_own(groups, 1)
    try:
        assert own is groups[1] and own[0].fileno() >= 0
        assert groups[0][0].fileno() == -1  # closed in this process
    finally:
        own[0].close()


def test_a_port_something_listens_on_is_refused_not_shared():
    """SO_REUSEPORT would let a second server of this user join a port: the probe refuses."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(KilnError, match="cannot listen on 127.0.0.1:"):
            listen_sockets("127.0.0.1", taken.getsockname()[1], 2)
    finally:
        taken.close()
    first = listen_sockets("127.0.0.1", 0, 2)
    try:  # listening already: a second server is refused while the first one starts
        with pytest.raises(KilnError, match="cannot listen"):
            listen_sockets("127.0.0.1", first[0][0].getsockname()[1], 2)
    finally:
        for group in first:
            group[0].close()


def test_an_unknown_host_is_a_clear_error():
    with pytest.raises(KilnError, match="cannot listen on no-such-host.invalid:8000"):
        listen_sockets("no-such-host.invalid", 8000, 2)


def _metrics(completions: int, tokens: int, itl: list[float]) -> ServerMetrics:
    m = ServerMetrics()
    m.requests.inc("/v1/completions", "200", by=completions)
    m.generation_tokens.inc(by=tokens)
    for value in itl:
        m.itl.observe(value)
    return m


def test_metrics_merge_every_api_servers_published_figures(tmp_path):
    a, b, c = _metrics(3, 30, [0.002, 0.004]), _metrics(5, 50, [0.02]), _metrics(1, 7, [])
    SharedMetrics(str(tmp_path), 1, 3).publish(b)
    SharedMetrics(str(tmp_path), 2, 3).publish(c)
    # API server 0 reads the others' last copies beside its own live figures
    merged = parse_metrics(SharedMetrics(str(tmp_path), 0, 3).merged(a).render({"num_running": 4}))
    assert merged['kiln_http_requests_total{route="/v1/completions",status="200"}'] == 9
    assert merged["kiln_generation_tokens_total"] == 87
    assert merged["kiln_inter_token_latency_seconds_count"] == 3
    assert merged['kiln_inter_token_latency_seconds_bucket{le="0.0025"}'] == 1
    assert merged['kiln_inter_token_latency_seconds_bucket{le="0.025"}'] == 3
    assert merged["kiln_inter_token_latency_seconds_sum"] == pytest.approx(0.026)
    assert merged["kiln_num_requests_running"] == 4  # gauges: the engine's, not summed
    # one that has not published yet (or is gone) is left out, not an error
    lone = parse_metrics(SharedMetrics(str(tmp_path / "none"), 0, 2).merged(a).render({}))
    assert lone["kiln_generation_tokens_total"] == 30
