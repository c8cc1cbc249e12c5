"""Compiling a piecewise lowering's distinct pieces: AOTInductor, in this process or in
spawned worker processes (KILN_COMPILE_WORKERS)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# The wrapper only unpacks arguments and calls kernels; at -O0 g++ builds it in about half the
# time (CPU demo: 6.5 s -> 2.4-5 s per piece), and a CUDA graph replays past it in decode.
PIECE_OPTIONS = {"aot_inductor.compile_wrapper_opt_level": "O0"}


def compile_all(programs: dict, folder: Path, labels: dict[str, str], progress) -> None:
    """AOTInductor-compile every program. With more than one worker (KILN_COMPILE_WORKERS),
    each goes to a spawned process as a saved ExportedProgram: most of a compile is the C++
    compiler (CPU: ~70% measured), and Inductor's tracing is not thread-safe. A program that
    cannot be saved (say, one holding a Triton launch) is compiled here instead."""
    from kiln import env

    workers = max(1, min(len(programs), env.compile_workers()))
    desc = f"compile {len(programs)} distinct pieces ({workers} at once)"
    with progress.pieces(len(programs), desc) as tick:
        local = dict(programs)
        if workers > 1:
            local = _compile_in_workers(programs, folder, labels, workers, tick)
        for digest, program in local.items():
            tick(labels[digest], compile_program(program, folder / f"{digest[:16]}.pt2"))


def _compile_in_workers(programs, folder: Path, labels, workers: int, tick) -> dict:
    """Compile the programs that can be saved in `workers` processes; returns the others."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    saved, local = {}, {}
    for digest, program in programs.items():
        path = folder / f".{digest[:16]}.program.pt2"
        try:
            torch.export.save(program, str(path))
            saved[digest] = path
        except Exception:  # noqa: BLE001 (serialisation limits vary by torch release)
            local[digest] = program
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {
            pool.submit(_worker, str(path), str(folder / f"{d[:16]}.pt2")): d
            for d, path in saved.items()
        }
        for future in as_completed(futures):
            digest = futures[future]
            try:
                tick(labels[digest], future.result())
            except Exception as e:  # noqa: BLE001 (a program that saved but cannot load there)
                log.warning("piece %s failed in a worker (%s); compiling it here", digest[:16], e)
                local[digest] = programs[digest]
    for path in saved.values():
        path.unlink()
    return local


def _worker(program_path: str, package_path: str) -> float:
    """A compile worker: load a saved piece and compile it (runs in a spawned process)."""
    import ir.kernels  # noqa: F401  (registers the IR ops and their kernels)

    return compile_program(torch.export.load(program_path), Path(package_path))


def compile_program(program, package: Path) -> float:
    """AOTInductor-compile one exported program into `package`; returns the seconds taken."""
    from torch._inductor import aoti_compile_and_package, config

    from compile_cache.formats import INDUCTOR_OPTIONS
    from compile_cache.tool_caches import default_root
    from lowering.aoti_headers import regex_free_aoti_runtime

    start = time.perf_counter()
    options = {**INDUCTOR_OPTIONS, **PIECE_OPTIONS}
    with config.patch(options), regex_free_aoti_runtime(default_root()):
        aoti_compile_and_package(program, package_path=str(package))
    return time.perf_counter() - start
