"""The engine core: one compact message per step, and aborts that free KV blocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.core_messages import (
    AbortRequests,
    AddRequests,
    CoreCodec,
    CoreOutputs,
    Delivered,
    FrontendGone,
    NewRequest,
    Rejected,
    Shutdown,
    StepInfo,
    TokenDelta,
)
from runtime.engine_core import IDLE_POLL_MS, MAX_STEPS_AHEAD, OUTPUTS, EngineCore, _loop
from runtime.outputs import TokenLogprob
from runtime.sampling_params import SamplingParams

pytestmark = pytest.mark.timeout(300)


def test_batched_outputs_round_trip_without_field_names():
    lp = TokenLogprob(17, -0.25, ((17, -0.25), (3, -1.5)))
    msg = CoreOutputs(
        outputs=[
            TokenDelta("cmpl-a-0", [101]),
            TokenDelta("cmpl-a-1", [7, 9], "length"),
            TokenDelta("chat-b-0", [17], "stop", [lp]),
        ],
        accepted=["x-0"],
        rejected=[Rejected("x-1", "prompt too long")],
        stats={"num_running": 2, "kv_usage": 0.125, "compile_seconds": None},
    )
    codec = CoreCodec()
    data = codec.encode(msg)
    assert codec.decode_outputs(data) == msg
    assert b"request_id" not in data and b"new_token_ids" not in data  # positional on the wire
    assert len(data) < 200


def test_inputs_round_trip_with_their_sampling_params():
    codec = CoreCodec()
    params = SamplingParams(max_tokens=9, temperature=0.5, seed=3, stop=("\n",), logprobs=2)
    for msg in (
        AddRequests([NewRequest("r-0", [1, 2, 3], params)]),
        AbortRequests(["r-0", "r-1"]),
        Shutdown(),
    ):
        assert codec.decode_input(codec.encode(msg)) == msg


@pytest.fixture(scope="module")
def core():
    from kiln.config import EngineConfig
    from kiln.resolve import build_engine

    return EngineCore(build_engine(EngineConfig("demo", compile="never", max_model_len=256)))


def _add(core: EngineCore, ids: list[str], max_tokens: int) -> CoreOutputs:
    params = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=5, ignore_eos=True)
    prompts = [[(13 * i + k) % 400 + 5 for k in range(20 + i)] for i in range(len(ids))]
    return core.apply(AddRequests([NewRequest(r, p, params) for r, p in zip(ids, prompts)]))


def test_one_message_per_step_carries_every_request(core):
    answer = _add(core, ["a-0", "a-1", "a-2"], max_tokens=3)
    assert answer.accepted == ["a-0", "a-1", "a-2"] and not answer.rejected
    seen: dict[str, list[int]] = {}
    finished = {}
    while core.running:
        msg = core.step()
        if not core.running:  # the step that empties the batch says so
            assert msg.stats["num_running"] == 0 and msg.stats["kv_blocks_used"] == 0
        assert len({d.request_id for d in msg.outputs}) == len(msg.outputs)
        for d in msg.outputs:
            seen.setdefault(d.request_id, []).extend(d.new_token_ids)
            if d.finish_reason:
                finished[d.request_id] = d.finish_reason
    assert {rid: len(t) for rid, t in seen.items()} == {"a-0": 3, "a-1": 3, "a-2": 3}
    assert finished == {"a-0": "length", "a-1": "length", "a-2": "length"}
    assert core.stats_due(force=True)["kv_blocks_used"] == 0


def test_abort_frees_the_sequence_and_its_kv_blocks(core):
    _add(core, ["b-0", "b-1"], max_tokens=200)
    for _ in range(4):
        core.step()
    stats = core.stats_due(force=True)
    assert stats["num_running"] == 2 and stats["kv_blocks_used"] >= 4
    answer = core.apply(AbortRequests(["b-0", "b-1"]))
    assert answer.stats["kv_blocks_used"] == 0  # what the server's /metrics shows next
    stats = core.stats_due(force=True)
    assert core.running == set()
    assert (stats["num_running"], stats["num_waiting"], stats["kv_blocks_used"]) == (0, 0, 0)


def test_a_refused_request_is_answered_not_raised(core):
    answer = _add(core, ["c-0"], max_tokens=10_000)  # beyond max_model_len
    assert answer.accepted == [] and "context length" in answer.rejected[0].message
    assert core.running == set()


def test_each_step_message_says_when_it_ran_and_what_it_held(core):
    import time

    before = time.monotonic()
    params = SamplingParams(max_tokens=2, ignore_eos=True)
    prompts = {"d-0": [401 + k for k in range(20)], "d-1": [402 + k for k in range(21)]}
    core.apply(AddRequests([NewRequest(r, p, params) for r, p in prompts.items()]))  # no hits
    first, second = core.step(), core.step()
    assert (first.step.num_decodes, first.step.num_prefill_tokens) == (0, 41)
    assert (second.step.num_decodes, second.step.num_prefill_tokens) == (2, 0)
    assert before <= first.step.started < first.step.ended <= second.step.started
    assert second.step.ended <= time.monotonic() and not core.running


class FakeSockets:
    """The core's two sockets in one object: `inbox` feeds `poll`/`recv` (`polls` keeps each
    poll's timeout); every send is logged in `events` (decoded), beside the "capture" a
    test's stand-in records. A finished request is followed by a Shutdown.

    The server's side of pacing: by default each step message is answered with `Delivered`
    at once (a server that keeps up); with `slow_server`, only when the core waits in a
    blocking poll with nothing queued, which logs "wait"."""

    def __init__(self, inbox: list, slow_server: bool = False) -> None:
        self.codec, self.inbox, self.events, self.polls = CoreCodec(), list(inbox), [], []
        self.slow_server = slow_server
        self.unanswered = 0

    def poll(self, timeout_ms: int) -> bool:
        self.polls.append(timeout_ms)
        if self.slow_server and timeout_ms > 0 and not self.inbox and self.unanswered:
            self.events.append("wait")
            self.inbox.append(Delivered(self.unanswered))
            self.unanswered = 0
        return bool(self.inbox)

    def recv(self) -> bytes:
        return self.codec.encode(self.inbox.pop(0))

    def send_multipart(self, frames, copy: bool = True) -> None:
        assert frames[0] == OUTPUTS
        msg = self.codec.decode_outputs(bytes(frames[1]))
        self.events.append(msg)
        if msg.step is not None:
            if self.slow_server:
                self.unanswered += 1
            else:
                self.inbox.append(Delivered(1))
        if any(d.finish_reason for d in msg.outputs):
            self.inbox.append(Shutdown())

    def moves(self) -> list[str]:
        """The events that matter here: "capture", "step" (a step's outputs), "answer"."""
        kinds = [e if isinstance(e, str) else "step" if e.step else "answer" if e.accepted
                 else "" for e in self.events]  # fmt: skip
        return [k for k in kinds if k]


@pytest.fixture()
def pending_graphs(core, monkeypatch):
    """Leaves the core's engine as `kiln serve` loads it on a GPU, graphs pending; returns
    `capture_into(sockets, fail=False, then=None)`, which installs a stand-in capture that
    logs "capture" in `sockets` (or raises) and then queues `then`."""
    loaded = core.engine.loaded
    monkeypatch.setattr(loaded, "graphs_pending", True)

    def capture_into(sockets: FakeSockets, fail: bool = False, then=None) -> None:
        def stand_in() -> float:
            loaded.graphs_pending = False
            if fail:
                raise RuntimeError("out of memory")
            sockets.events.append("capture")
            if then is not None:
                sockets.inbox.append(then)
            return 0.0

        monkeypatch.setattr(loaded, "capture_graphs", stand_in)

    return capture_into


def _one_request(rid: str) -> AddRequests:
    return AddRequests([NewRequest(rid, [5, 6, 7], SamplingParams(max_tokens=3, ignore_eos=True))])


def test_pending_graphs_are_captured_once_the_first_steps_outputs_are_sent(core, pending_graphs):
    sockets = FakeSockets([_one_request("g-0")])
    pending_graphs(sockets)
    _loop(EngineCore(core.engine), sockets, [sockets])
    assert sockets.moves() == ["answer", "step", "capture", "step", "step"]


def test_an_idle_core_captures_pending_graphs_after_its_first_wait(core, pending_graphs):
    sockets = FakeSockets([])
    pending_graphs(sockets, then=Shutdown())
    _loop(EngineCore(core.engine), sockets, [sockets])
    assert sockets.moves() == ["capture"]
    assert sockets.polls[0] == IDLE_POLL_MS


def test_a_failed_graph_capture_ends_the_core_with_a_logged_error(core, pending_graphs, caplog):
    sockets = FakeSockets([_one_request("f-0")])
    pending_graphs(sockets, fail=True)
    engine_core = EngineCore(core.engine)
    try:
        with pytest.raises(SystemExit) as exit_info:
            _loop(engine_core, sockets, [sockets])
    finally:
        engine_core.engine.abort("f-0")
    assert exit_info.value.code == 1
    assert "capturing the step CUDA graphs failed" in caplog.text
    assert "out of memory" in caplog.text


def test_the_core_steps_at_most_max_steps_ahead_of_what_the_server_delivered(core):
    """A server that writes slower than the engine steps: after MAX_STEPS_AHEAD unanswered
    steps the core waits (a blocking poll) for `Delivered` before each further step."""
    assert MAX_STEPS_AHEAD == 2
    params = SamplingParams(max_tokens=5, ignore_eos=True)
    sockets = FakeSockets([AddRequests([NewRequest("p-0", [5, 6, 7], params)])], slow_server=True)
    _loop(EngineCore(core.engine), sockets, [sockets])
    moves = sockets.moves()
    # each wait answers every step sent so far: two more steps, then the core waits again
    assert moves == ["answer", "step", "step", "wait", "step", "step", "wait", "step"]
    steps = [e for e in sockets.events if not isinstance(e, str) and e.step]
    assert [len(e.outputs[0].new_token_ids) for e in steps] == [1] * 5  # every token delivered
    assert steps[-1].outputs[0].finish_reason == "length"


def test_delivered_answers_never_leave_the_core_owing_steps(core):
    """More `Delivered` than steps sent (a server answering a step the core already counted
    off) cannot let the core run further ahead later."""
    engine_core = EngineCore(core.engine)
    assert engine_core.apply(Delivered(3)) is None
    assert engine_core.undelivered == [0]


def test_delivered_round_trips_on_the_input_channel():
    codec = CoreCodec()
    assert codec.decode_input(codec.encode(Delivered(2))) == Delivered(2)


WORKER = Path(__file__).with_name("core_start_worker.py")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_forked_or_spawned_core_reports_its_build_error_and_keeps_its_own_clock(method):
    """`kiln serve` forks its core from a clean server process (spawns it otherwise): either
    way a failing build reaches the server as the same message, and the core's start-up
    clock starts with the core, not with its parent."""
    proc = subprocess.run([sys.executable, str(WORKER), method], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["can_fork"]
    assert out["message"] == "the engine could not start: RuntimeError"
    assert (out["core_cmdline"] == out["own_cmdline"]) == (method == "fork")
    assert out["core_clock_after_start"]


def test_only_a_single_threaded_process_without_torch_may_fork_its_core():
    code = (
        "import threading, time\n"
        "from runtime.engine_core import can_fork\n"
        "print(can_fork())\n"
        "t = threading.Thread(target=time.sleep, args=(0.5,)); t.start()\n"
        "print(can_fork())\n"
        "t.join()\n"
        "deadline = time.monotonic() + 5\n"  # the OS thread outlives join() by a moment
        "while not can_fork() and time.monotonic() < deadline: time.sleep(0.01)\n"
        "print(can_fork())\n"
        "import torch\n"
        "print(can_fork())\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "False", "True", "False"]


def _params(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, ignore_eos=True)


def test_several_api_servers_each_get_their_own_requests_answers_and_tokens(core):
    """Two API servers: each add is answered to its sender, each step's outputs are split by
    the request's API server, the step rides with both parts (the second marked shared, so
    /metrics counts it once), and each part is owed its own `Delivered`."""
    two = EngineCore(core.engine, frontends=2)
    a = two.apply(AddRequests([NewRequest("m-0", [5, 6, 7], _params(3))], frontend=0))
    b = two.apply(AddRequests([NewRequest("m-1", [8, 9], _params(3)),
                               NewRequest("m-2", [9] * 10_000, _params(3))], frontend=1))  # fmt: skip
    assert two.route(a) == [(0, CoreOutputs(outputs=[], accepted=["m-0"], rejected=[]))]
    ((to, answer),) = two.route(b, to=1)
    assert to == 1 and answer.accepted == ["m-1"] and answer.rejected[0].request_id == "m-2"
    tokens: dict[str, list[int]] = {"m-0": [], "m-1": []}
    while two.running:
        msg = two.step()
        parts = dict(two.route(msg))
        assert sorted(parts) == [0, 1]
        for f, rid in ((0, "m-0"), (1, "m-1")):
            assert [d.request_id for d in parts[f].outputs] == [rid]
            tokens[rid] += parts[f].outputs[0].new_token_ids
            assert parts[f].step == msg.step and parts[f].stats == msg.stats
        assert (parts[0].step_shared, parts[1].step_shared) == (False, True)
    assert {rid: len(t) for rid, t in tokens.items()} == {"m-0": 3, "m-1": 3}
    assert two.undelivered == [3, 3] and not two.may_step
    assert two._frontend_of == {}  # finished requests are forgotten


def test_the_core_waits_for_the_slowest_api_server(core):
    """Pacing is per API server: one that is MAX_STEPS_AHEAD behind stops the core, however
    far ahead the other has answered."""
    two = EngineCore(core.engine, frontends=2)
    two.route(two.apply(AddRequests([NewRequest("w-0", [5, 6], _params(50))], frontend=0)))
    two.route(two.apply(AddRequests([NewRequest("w-1", [7, 8], _params(50))], frontend=1)))
    for _ in range(MAX_STEPS_AHEAD):
        assert two.may_step
        two.route(two.step())
    assert two.undelivered == [2, 2] and not two.may_step
    two.apply(Delivered(2, frontend=0))
    assert not two.may_step  # API server 1 still owes two
    two.apply(Delivered(1, frontend=1))
    assert two.may_step
    two.apply(Delivered(1, frontend=7))  # an unknown API server is ignored, not a crash
    assert two.undelivered == [0, 1]
    # an abort from either API server frees its request; stats then reach both
    parts = dict(two.route(two.apply(AbortRequests(["w-0", "w-1"]))))
    assert sorted(parts) == [0, 1] and parts[0].stats == parts[1].stats
    assert parts[0].stats["num_running"] == 0 and not parts[0].outputs


def test_a_step_that_moved_no_request_goes_to_api_server_0_and_a_failure_to_all(core):
    two = EngineCore(core.engine, frontends=2)
    step = CoreOutputs(outputs=[], step=StepInfo(1.0, 2.0, 0, 64))
    assert [(f, p.step, p.step_shared) for f, p in two.route(step)] == [(0, step.step, False)]
    assert two.undelivered == [1, 0]
    parts = two.route(CoreOutputs(failed="RuntimeError: boom"))
    assert [(f, p.failed) for f, p in parts] == [
        (0, "RuntimeError: boom"),
        (1, "RuntimeError: boom"),
    ]


def test_a_gone_api_server_has_its_requests_aborted_and_no_longer_sets_the_pace(core):
    """API server 1 exited with a request running and two steps unanswered: without
    `FrontendGone` the core would wait for it forever and API server 0's streams would hang."""
    two = EngineCore(core.engine, frontends=2)
    two.route(two.apply(AddRequests([NewRequest("g-0", [5, 6], _params(6))], frontend=0)), 0)
    two.route(two.apply(AddRequests([NewRequest("g-1", [7, 8], _params(50))], frontend=1)), 1)
    for _ in range(MAX_STEPS_AHEAD):
        two.route(two.step())
    two.apply(Delivered(2, frontend=0))
    assert not two.may_step  # API server 1 owes two steps and never answers
    two.apply(FrontendGone(1))
    assert two.running == {"g-0"} and two.may_step and two.gone == {1}
    while two.running:
        parts = two.route(two.step())
        assert [f for f, _ in parts] == [0]  # nothing more goes to API server 1
        two.apply(Delivered(1, frontend=0))
    late = two.route(CoreOutputs(accepted=["x"], rejected=[]), to=1)  # an add it sent before
    assert late == []
    assert [f for f, _ in two.route(CoreOutputs(stats={"num_running": 0}))] == [0]


def test_max_queue_is_counted_in_the_core_for_every_api_server(core):
    """With several API servers only the core sees every running request: an add that would
    pass `--max-queue` is refused whole, marked `queue_full` (the server answers 503)."""
    two = EngineCore(core.engine, frontends=2, max_queue=2)
    a = two.apply(AddRequests([NewRequest("q-0", [5, 6], _params(50))], frontend=0))
    b = two.apply(AddRequests([NewRequest("q-1", [5, 7], _params(50)),
                               NewRequest("q-2", [5, 8], _params(50))], frontend=1))  # fmt: skip
    assert a.accepted == ["q-0"] and b.accepted == []
    assert [(r.request_id, r.queue_full) for r in b.rejected] == [("q-1", True), ("q-2", True)]
    assert "--max-queue 2" in b.rejected[0].message
    c = two.apply(AddRequests([NewRequest("q-3", [9] * 10_000, _params(5))], frontend=1))
    assert not c.rejected[0].queue_full  # a bad request is still the request's fault (400)
    two.apply(AbortRequests(["q-0"]))
    assert two.running == set()
