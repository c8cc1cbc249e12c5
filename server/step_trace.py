"""`KILN_STEP_TRACE`: one JSON line per engine step, written by the API server process.

A line holds the core's step (`started`, `ended`, `decodes`, `prefill` tokens), when this
process read its message (`received`) and had handed every output to its handler
(`delivered`), and the engine request ids it advanced (`ids`). Times are `time.monotonic()`,
one clock for every process of the host, so a client on the same host can join its per-chunk
timestamps to the step behind each chunk (`benchmarks/serve_profile.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.core_messages import StepInfo


class StepTrace:
    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", buffering=1 << 16)  # the server's stop() closes it

    def record(self, step: StepInfo, received: float, delivered: float, ids: list[str]) -> None:
        line = {
            "started": step.started,
            "ended": step.ended,
            "decodes": step.num_decodes,
            "prefill": step.num_prefill_tokens,
            "received": received,
            "delivered": delivered,
            "ids": ids,
        }
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()
