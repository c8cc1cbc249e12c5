"""Starts an engine core from a clean interpreter (no torch, one thread), as `kiln serve`
does, with a build that fails on purpose and says how its process began.

    python tests/runtime/core_start_worker.py fork|spawn

Prints one JSON line: the message the server side got, the core's command line, this
process's command line, and the core's start-up clock against the moment before the start.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def fail_with_facts(_arg) -> None:
    """The core's build: raise with what the server side is to report (its message)."""
    from kiln import startup

    cmdline = Path("/proc/self/cmdline").read_bytes().decode(errors="replace")
    raise RuntimeError(json.dumps({"cmdline": cmdline, "process_start": startup.PROCESS_START}))


def main(method: str) -> dict:
    from kiln.errors import KilnError
    from runtime.engine_core import can_fork, spawn_core
    from server.core_client import connect_core

    before = time.time()
    clean = can_fork()
    try:
        connect_core(spawn_core(fail_with_facts, None, fork=method == "fork"))
    except KilnError as e:
        message = str(e)
    facts = json.loads(message.split("RuntimeError: ", 1)[1])
    return {
        "can_fork": clean,
        "message": message.split(": {", 1)[0],
        "core_cmdline": facts["cmdline"],
        "own_cmdline": Path("/proc/self/cmdline").read_bytes().decode(errors="replace"),
        "core_clock_after_start": facts["process_start"] >= before,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
