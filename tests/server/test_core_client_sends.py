"""The server's sends to the engine core never hang the event loop on a core that is gone."""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time

import pytest
import zmq

from runtime.core_messages import AbortRequests, CoreCodec, Delivered
from runtime.engine_core import EngineInfo
from runtime.sampling_params import SamplingParams
from server.core_client import SEND_TIMEOUT_MS, CoreProcess, EngineCoreClient
from server.errors import APIError
from server.metrics import ServerMetrics
from tests.server.fake_engine import FakeTokenizer


def _client_without_a_core() -> tuple[EngineCoreClient, zmq.Socket]:
    """A client whose PUSH socket is bound with no peer, as after the core exited."""
    ctx = zmq.Context.instance()
    folder = tempfile.mkdtemp(prefix="kiln-test-")
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    for sock in (push, pull):
        sock.setsockopt(zmq.LINGER, 0)
        sock.set_hwm(0)
    push.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
    push.bind(f"ipc://{folder}/in")
    pull.bind(f"ipc://{folder}/out")
    info = EngineInfo("fake", 64, 256, FakeTokenizer(), "fake", {})
    proc = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    core = CoreProcess(proc, push, pull, folder, info)
    return EngineCoreClient(core, ServerMetrics(), max_queue=8), pull


def test_a_step_answer_to_a_core_that_is_gone_is_dropped_at_once():
    client, _ = _client_without_a_core()
    t0 = time.monotonic()
    client._send_delivered(CoreCodec().encode(Delivered(1)))
    assert time.monotonic() - t0 < 0.5


def test_a_command_to_a_core_that_is_gone_waits_at_most_the_send_timeout():
    client, _ = _client_without_a_core()
    t0 = time.monotonic()
    client._send(AbortRequests(["x"]))
    assert time.monotonic() - t0 < SEND_TIMEOUT_MS / 1000 + 1.0


def test_commands_reach_a_connected_core():
    client, _ = _client_without_a_core()
    peer = zmq.Context.instance().socket(zmq.PULL)
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(client.core.push.getsockopt_string(zmq.LAST_ENDPOINT))
    client._send(AbortRequests(["x"]))
    client._send_delivered(CoreCodec().encode(Delivered(1)))
    codec = CoreCodec()
    assert peer.poll(2000)
    assert codec.decode_input(peer.recv()) == AbortRequests(["x"])
    assert peer.poll(2000)
    assert codec.decode_input(peer.recv()) == Delivered(1)
    peer.close()


def test_an_add_the_core_cannot_take_is_a_503_and_later_sends_skip_at_once():
    client, _ = _client_without_a_core()  # its process never started: the core is gone
    params = SamplingParams(max_tokens=2)
    with pytest.raises(APIError) as err:
        asyncio.run(client._send_add(["r-0"], [[5, 6, 7]], [params]))
    assert err.value.status == 503 and err.value.code == "engine_unavailable"
    assert not client._pending  # nothing waits on an answer that cannot come
    t0 = time.monotonic()
    assert client._send(AbortRequests(["r-0"])) is False
    assert time.monotonic() - t0 < 0.5
