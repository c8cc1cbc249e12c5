"""Cubins for a plan's kernel launches: deduplicated, compiled for the target on threads.

Every recorded launch gives two compile jobs: its *specialized* signature (Triton's JIT rules:
ints equal to 1 become constants, 16-divisible ints and aligned pointers get a divisibility
hint) and the *generic* one (no such assumption), so a runtime launch whose alignment or int
values differ from the example step still finds a cubin. Identical launches (the same
function, source, signature, constants and warps: every decoder layer of one structure)
share one job, so a model of N identical layers compiles one cubin set at any depth.

`CubinPool` starts each job as soon as the plan records a launch needing it: Triton holds the
interpreter lock for its Python front end only (about a fifth of a compile, sampled on the
8B plan); its MLIR and LLVM passes and ptxas run without it, so cubins build while the plan's
walk goes on in Python. While the pool is open the cyclic collector is paused: CPython 3.11
builds `ast.parse`'s objects on interpreter-wide state, and a collection that runs Python
code (finalizers of the walk's garbage) in the middle of one thread's parse lets another
thread parse meanwhile (Triton parses each kernel's source), which fails the first with
"SystemError: AST constructor recursion depth mismatch" (python/cpython#106905; Triton
reports it as a CompilationError of the kernel). With no collection, no Python code runs
inside a parse, so no other thread does.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compile_cache.triton_abi import constexpr_value, source_hash
from lowering.cross import compile_signature, signature_of
from lowering.plan import RecordedLaunch


@dataclass
class CubinJob:
    """One distinct cubin to build, and where the plan launches it."""

    id: str
    fn: Any  # triton JITFunction
    module: str
    source_hash: str
    signature: dict
    constexprs: dict
    attrs: dict
    specialization: dict
    num_warps: int
    num_stages: int
    example: dict  # the first launch's arguments and grid, described
    nodes: list[str] = field(default_factory=list)


@dataclass
class Cubin:
    """A compiled job: the binary and the metadata a launcher needs (`<id>.json`)."""

    id: str
    data: bytes
    metadata: dict


def plan_jobs(launches: list[RecordedLaunch]) -> tuple[dict[str, CubinJob], list[list[str]]]:
    """({job id: job}, per launch [specialized id, generic id]) for the recorded launches."""
    jobs: dict[str, CubinJob] = {}
    hashes: dict[int, str] = {}
    per_launch = [_add_jobs(rec, jobs, hashes) for rec in launches]
    return jobs, per_launch


def _add_jobs(rec: RecordedLaunch, jobs: dict[str, CubinJob], hashes: dict) -> list[str]:
    """Add `rec`'s two jobs to `jobs` (a job already there keeps its first launch's example)
    and note its node; returns [specialized id, generic id]. `hashes` memoizes source hashes
    by function (one reads and tokenizes the kernel's file: 2 ms, for each launch)."""
    fn = rec.launch.fn
    if id(fn) not in hashes:
        hashes[id(fn)] = source_hash(fn)
    ids = []
    for specialize in (True, False):
        job = _job(rec, specialize, hashes[id(fn)])
        job = jobs.setdefault(job.id, job)
        if rec.node not in job.nodes:
            job.nodes.append(rec.node)
        ids.append(job.id)
    return ids


def _job(rec: RecordedLaunch, specialize: bool, src: str) -> CubinJob:
    launch = rec.launch
    signature, constexprs, attrs, spec = signature_of(launch.fn, launch.args, specialize)
    key = [launch.fn.__name__, src, signature, {k: str(v) for k, v in constexprs.items()},
           sorted((list(k), v) for k, v in attrs.items()), launch.num_warps, launch.num_stages]  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    example = {"args": [describe(a) for a in launch.args], "grid": list(launch.grid)}
    return CubinJob(f"{launch.fn.__name__}-{digest}", launch.fn, rec.module, src, signature,
                    constexprs, attrs, spec, launch.num_warps, launch.num_stages, example)  # fmt: skip


def describe(value: Any) -> Any:
    """A launch argument as JSON: a tensor's dtype, shape, strides and offset, else the value."""
    if isinstance(value, torch.Tensor):
        return {"dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape),
                "stride": list(value.stride()), "offset": value.storage_offset()}  # fmt: skip
    return constexpr_value(value)


def compile_jobs(jobs: dict[str, CubinJob], target, threads: int, tick=None) -> list[Cubin]:
    """Compile every job for `target` on `threads` threads (ptxas is a subprocess, so they
    overlap); `tick(label, seconds)` after each one."""

    def build(job: CubinJob) -> Cubin:
        data, meta, seconds = _compile(job, target)
        if tick is not None:
            tick(job.id, seconds)
        return Cubin(job.id, data, {**meta, **_job_metadata(job)})

    ordered = [jobs[k] for k in sorted(jobs)]
    if threads <= 1:
        return [build(j) for j in ordered]
    with _collector_paused(), ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(build, ordered))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic collection inside: Triton's compiles on threads parse at once (see the
    module docstring)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class CubinPool:
    """Compiles each distinct job of the launches `add`ed, as they are added, on `threads`
    threads; `cubins(tick)` waits for them. `prefetch(launch)` starts a launch's jobs ahead
    of the `add` that may follow (a look-ahead walk's launch): only jobs some added launch
    needs are waited for and returned. Use as a context manager: leaving it early (the plan
    failed) drops the jobs not yet started."""

    def __init__(self, target, threads: int):
        self.target = target
        self.jobs: dict[str, CubinJob] = {}  # the added launches' jobs
        self.per_launch: list[list[str]] = []  # per added launch: [specialized id, generic id]
        self._ahead: dict[str, CubinJob] = {}  # the prefetched launches' jobs
        self._hashes: dict[int, str] = {}
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kiln-cubin")
        self._futures: dict[str, Future] = {}
        self._open = ExitStack()

    def __enter__(self) -> CubinPool:
        self._open.enter_context(_collector_paused())
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._open.close()

    def add(self, rec: RecordedLaunch) -> None:
        ids = _add_jobs(rec, self.jobs, self._hashes)
        self.per_launch.append(ids)
        for job_id in ids:
            self._submit(self.jobs[job_id])

    def prefetch(self, rec: RecordedLaunch) -> None:
        for job_id in _add_jobs(rec, self._ahead, self._hashes):
            self._submit(self._ahead[job_id])

    def _submit(self, job: CubinJob) -> None:
        """Compile `job` unless a job of its id is compiling (the same signature: the same
        cubin; the metadata is taken from `self.jobs`)."""
        if job.id not in self._futures:
            self._futures[job.id] = self._pool.submit(_compile, job, self.target)

    def cubins(self, tick=None) -> list[Cubin]:
        """Every added job's cubin, in job id order; `tick(label, seconds)` as each is done."""
        waiting = {self._futures[job_id]: job for job_id, job in self.jobs.items()}
        done = {}
        for future in as_completed(waiting):
            job = waiting[future]
            data, meta, seconds = future.result()
            done[job.id] = Cubin(job.id, data, {**meta, **_job_metadata(job)})
            if tick is not None:
                tick(job.id, seconds)
        return [done[k] for k in sorted(done)]


def _compile(job: CubinJob, target) -> tuple[bytes, dict, float]:
    start = time.perf_counter()
    data, meta = compile_signature(job.fn, job.signature, job.constexprs, job.attrs,
                                   job.num_warps, job.num_stages, target)  # fmt: skip
    return data, meta, time.perf_counter() - start


def _job_metadata(job: CubinJob) -> dict:
    return dict(id=job.id, fn=job.fn.__name__, module=job.module, source_hash=job.source_hash,
                specialization=job.specialization, example=job.example, nodes=job.nodes)  # fmt: skip


def write_cubins(cubins: list[Cubin], sources: dict[str, str], folder: Path) -> list[str]:
    """`<id>.cubin` + `<id>.json` per cubin and `<source id>.py` per plain source; returns the
    artifact paths of the cubins."""
    folder.mkdir(parents=True, exist_ok=True)
    for c in cubins:
        (folder / f"{c.id}.cubin").write_bytes(c.data)
        (folder / f"{c.id}.json").write_text(json.dumps(c.metadata, indent=2, sort_keys=True))
    for source_id, text in sources.items():
        (folder / f"{source_id}.py").write_text(text)
    return sorted(f"{folder.name}/{c.id}.cubin" for c in cubins)
