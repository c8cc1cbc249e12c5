"""The frontend benchmark end to end: the product's server and engine-core processes around
a synthetic engine, under the bench's client processes."""

from __future__ import annotations

import pytest

from benchmarks.serve_frontend import run

pytestmark = pytest.mark.timeout(300)


def test_an_engine_faster_than_the_server_is_paced_and_every_token_arrives():
    """A zero-time engine outruns any server: the core must wait for the server's `Delivered`
    answers (without them it stops after two steps and this load never ends), and every
    request still gets its tokens one chunk per step."""
    result = run(0.0, [4], input_len=8, output_len=24, client_procs=1)
    (row,) = result["rows"]
    assert row["errors"] == 0
    assert row["chunks_per_request"] == [24, 24]  # one chunk per token, none lost
    assert row["tok_s"] > 0 and row["engine_pace_tok_s"] is None


def test_a_slow_engine_sets_the_pace():
    """Steps of 20 ms: the server keeps up, so clients see the engine's step as their ITL."""
    result = run(20.0, [2], input_len=8, output_len=12, client_procs=1)
    (row,) = result["rows"]
    assert row["errors"] == 0 and row["chunks_per_request"] == [12, 12]
    assert 15 <= row["itl_p50_ms"] <= 60
    assert row["tok_s"] <= row["engine_pace_tok_s"] * 1.1


def test_two_api_servers_share_the_streams_and_each_is_paced():
    """The product's multi-process layout around a zero-time engine: every token arrives, and
    both API server processes did work (the kernel spread the connections over them)."""
    result = run(0.0, [8], input_len=8, output_len=24, client_procs=2, api_servers=2)
    (row,) = result["rows"]
    assert row["errors"] == 0 and row["chunks_per_request"] == [24, 24]
    assert len(row["server_busy"]) == 2 and min(row["server_busy"]) > 0
