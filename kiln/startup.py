"""Process-wide settings for the start-up of the verbs that build an engine (`generate`, `serve`),
and for `kiln compile`.

Start-up allocates a few hundred thousand objects that live as long as the process (torch's
operator registry and bindings, the model's modules and parameters) and frees almost none of
them. Python's cyclic collector still walks them again and again while they are made: about
0.1 s of the 0.95 s `import torch` takes on the 2-core CPU machine (11%, measured 6 + 6 runs).
So the collector pauses from argument parsing until the engine is built; then `gc.freeze` moves
everything start-up made out of the collector's reach, so no later full collection walks the
torch and model objects in the middle of a request. The cost: what start-up left in reference
cycles is frozen too and never collected (on the demo, ~8k small objects and no tensor;
tests/kiln/test_startup.py keeps tensors out of them).

`kiln compile` pauses the collector for the whole command: the capture's graphs and fake
tensors leave cycles that it walks again and again (1.1 s of collections in the 8B plan's
compile, of 12 s of CPU in the compiling process) though all of them go with the process; the
compile's peak memory stays the same (0.5 GB).

`kiln serve`'s two processes then collect less often (`serve_gc`): a streaming server allocates
and frees a few dozen containers per token chunk, and the default first-generation threshold
(700 net allocations) ran a second-generation pass of 1.2-1.6 ms about three times a second in
the server process under 128 streaming clients (`benchmarks/serve_frontend.py`, 3 ms steps,
the 2-core CPU machine): each delays every stream's next chunk by that much, about a third of a
step of the demo on a GPU. At 10,000 none ran during the same loads.

KILN_STARTUP_GC_PAUSE=0 leaves the collector alone, to measure this or rule it out.

`head_start` begins what an engine's start can do before torch is imported: the CUDA driver and
the weight stream, both on threads.
"""

from __future__ import annotations

import gc
import os
import time

from kiln import env

# As early as Kiln's own code runs (`kiln.cli` imports this module first; wall clock, comparable
# across processes): the start-up report of `kiln generate` measures "imports" from here. A
# forked child (`kiln serve`'s engine core) starts its own clock at the fork.
PROCESS_START = time.time()


def _forked() -> None:
    global PROCESS_START
    PROCESS_START = time.time()


os.register_at_fork(after_in_child=_forked)

_paused = False


def head_start(model: str, device: str) -> None:
    """Start the GPU's driver (`runtime/cuda_driver.py`) and the weights' stream
    (`runtime/weight_stream.py`) for an engine of `model` on `--device` `device`; call it
    before importing torch. Both are only head starts: the engine's load checks and redoes
    what they could not do."""
    from runtime.cuda_driver import start_driver_init
    from runtime.weight_stream import start_early

    start_driver_init(device)
    start_early(model, device)


def pause_gc() -> None:
    """Stop cyclic collection until `resume_gc` (unless KILN_STARTUP_GC_PAUSE=0)."""
    global _paused
    if _paused or not gc.isenabled() or not env.startup_gc_pause_enabled():
        return
    gc.disable()
    _paused = True


SERVE_GC_THRESHOLD = (10_000, 10, 10)  # gc.set_threshold for `kiln serve`'s processes


def serve_gc() -> None:
    """`kiln serve`'s collector thresholds, once start-up is over (unless
    KILN_STARTUP_GC_PAUSE=0)."""
    if env.startup_gc_pause_enabled():
        gc.set_threshold(*SERVE_GC_THRESHOLD)


def resume_gc(*, freeze: bool = True) -> None:
    """End `pause_gc`: with `freeze`, first move every live object into the permanent
    generation (the engine is built: they live as long as the process). Does nothing when
    `pause_gc` did not pause, so a caller's own collector settings are left alone."""
    global _paused
    if not _paused:
        return
    if freeze:
        gc.freeze()
    gc.enable()
    _paused = False
