"""The wire format between the API server and the engine-core process (msgspec msgpack).

Server -> core: `AddRequests`, `AbortRequests`, `Delivered`, `FrontendGone`, `Shutdown` (one
tagged union).
Core -> server: one `CoreOutputs` per engine step for every request that moved, with the
step's timing and make-up, plus the admission answers (`accepted` / `rejected`) of the adds
applied before that step, and engine stats now and then. With several API server processes
(`kiln serve --api-servers N`) each has its own pair of channels: its adds and deliveries
name it (`frontend`), and the core sends each one the part of a step that is its own.
Structs are `array_like` (field names stay off the wire) because a step's message is sent
for every step; no torch here, the server process never imports it.
"""

from __future__ import annotations

import msgspec

from runtime.outputs import TokenLogprob
from runtime.sampling_params import SamplingParams


class NewRequest(msgspec.Struct, array_like=True):
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams


class AddRequests(msgspec.Struct, tag="add", array_like=True):
    requests: list[NewRequest]
    frontend: int = 0  # the API server the requests' outputs go to


class AbortRequests(msgspec.Struct, tag="abort", array_like=True):
    request_ids: list[str]


class Delivered(msgspec.Struct, tag="delivered", array_like=True):
    """The server has handed this many more step messages' tokens to their streams (the
    core runs at most `MAX_STEPS_AHEAD` steps ahead of it, runtime/engine_core.py)."""

    steps: int = 1
    frontend: int = 0  # the API server that answers


class FrontendGone(msgspec.Struct, tag="gone", array_like=True):
    """API server 0 says API server `frontend` has exited: the core aborts its requests and
    stops pacing to it."""

    frontend: int


class Shutdown(msgspec.Struct, tag="shutdown", array_like=True):
    pass


CoreInput = AddRequests | AbortRequests | Delivered | FrontendGone | Shutdown


class TokenDelta(msgspec.Struct, array_like=True, omit_defaults=True):
    """What one request gained in one step: its new token ids and, when it ended, why."""

    request_id: str
    new_token_ids: list[int]
    finish_reason: str | None = None  # "stop" | "length" | "abort" (set once, at the end)
    new_logprobs: list[TokenLogprob] | None = None


class Rejected(msgspec.Struct, array_like=True):
    request_id: str
    message: str  # the engine's KilnError text (the server answers 400 with it)
    queue_full: bool = False  # refused for `--max-queue`, not for the request (503)


class StepInfo(msgspec.Struct, array_like=True):
    """When the core ran one step and what it held (/metrics, traces, benchmarks).

    Times are `time.monotonic()`: one clock for every process of the host."""

    started: float
    ended: float
    num_decodes: int  # sequences that ran their one next token
    num_prefill_tokens: int  # prompt chunks and recomputes


class CoreOutputs(msgspec.Struct, array_like=True, omit_defaults=True):
    outputs: list[TokenDelta] = []
    step: StepInfo | None = None  # the step these outputs came from
    accepted: list[str] = []
    rejected: list[Rejected] = []
    failed: str | None = None  # the step raised: every running request ended with this error
    # The step's other outputs went to an API server listed earlier, which counts it in
    # /metrics (several API servers: each step is counted once).
    step_shared: bool = False
    stats: dict[str, float | int | None] | None = None  # engine.stats() + core step timing


class CoreCodec:
    """One encoder/decoder pair per process (msgspec reuses its buffers)."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._inputs = msgspec.msgpack.Decoder(CoreInput)
        self._outputs = msgspec.msgpack.Decoder(CoreOutputs)

    def encode(self, message: msgspec.Struct) -> bytes:
        return self._encoder.encode(message)

    def decode_input(self, data: bytes) -> CoreInput:
        return self._inputs.decode(data)

    def decode_outputs(self, data: bytes) -> CoreOutputs:
        return self._outputs.decode(data)
