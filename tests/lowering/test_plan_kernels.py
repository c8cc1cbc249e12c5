"""CubinPool: a launch's cubins start compiling when the launch is recorded, identical launches
share their jobs, and the pool's cubins match what the serial `compile_jobs` builds."""

from __future__ import annotations

import threading

import pytest
import torch
import triton
import triton.language as tl

import lowering.plan_kernels as plan_kernels
from ir.targets import get_target
from lowering.cross import Launch
from lowering.plan import RecordedLaunch
from lowering.plan_kernels import CubinPool, compile_jobs, plan_jobs


@triton.jit
def _scale(x_ptr, out_ptr, n, factor, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * factor, mask=mask)


def launch(node: str, n: int = 13) -> RecordedLaunch:
    x = torch.empty(n, dtype=torch.float32, device="meta")  # [n]
    args = (x, torch.empty_like(x), n, 2.0, 64)
    return RecordedLaunch(node, Launch(_scale, (1, 1, 1), args, 4, 1), __name__)


def test_a_launch_compiles_while_the_plan_is_still_recorded(monkeypatch):
    started = threading.Event()
    real = plan_kernels._compile

    def noted(job, target):
        started.set()
        return real(job, target)

    monkeypatch.setattr(plan_kernels, "_compile", noted)
    with CubinPool(get_target("h100"), threads=1) as pool:
        pool.add(launch("scale_0"))
        assert started.wait(timeout=60), "no compile began before the cubins were asked for"
        pool.add(launch("scale_1"))  # the same launch from another node: no new job
        pool.add(launch("scale_2", n=32))  # 32 is divisible by 16: a new specialized job
        cubins = pool.cubins()
    assert [c.id for c in cubins] == sorted(pool.jobs) and len(cubins) == 3
    specialized, generic = pool.per_launch[0]
    assert pool.per_launch[1] == [specialized, generic] and pool.per_launch[2][1] == generic
    assert pool.jobs[specialized].nodes == ["scale_0", "scale_1"]
    assert pool.jobs[generic].nodes == ["scale_0", "scale_1", "scale_2"]


def test_the_pool_builds_what_the_serial_compile_builds():
    target = get_target("h100")
    recs = [launch("scale_0"), launch("scale_1", n=32)]
    with CubinPool(target, threads=2) as pool:
        for rec in recs:
            pool.add(rec)
        pooled = pool.cubins()
    jobs, per_launch = plan_jobs(recs)
    serial = compile_jobs(jobs, target, threads=1)
    assert per_launch == pool.per_launch
    assert [(c.id, c.data, c.metadata) for c in pooled] == [
        (c.id, c.data, c.metadata) for c in serial
    ]


def test_a_failed_compile_is_raised_by_cubins(monkeypatch):
    def broken(job, target):
        raise RuntimeError(f"ptxas rejected {job.id}")

    monkeypatch.setattr(plan_kernels, "_compile", broken)
    with CubinPool(get_target("h100"), threads=2) as pool:
        pool.add(launch("scale_0"))
        with pytest.raises(RuntimeError, match="ptxas rejected _scale-"):
            pool.cubins()


def test_threads_parse_kernels_safely_while_the_pool_is_open():
    """CPython 3.11's `ast.parse` fails spuriously ("AST constructor recursion depth
    mismatch") when a collection in the middle of one thread's parse runs finalizers and
    another thread parses meanwhile, as Triton's compile threads do while the plan's walk
    makes garbage. The pool pauses the collector, so no parse is interrupted."""
    import ast
    import gc
    import inspect

    source = inspect.getsource(plan_kernels)
    errors, stop = [], threading.Event()

    class Finalized:
        def __del__(self):
            pass

    def make_garbage():  # cycles with finalizers, as the walk's fake tensors leave
        while not stop.is_set():
            cycle = [Finalized()]
            cycle.append(cycle)

    def parse():
        for _ in range(150):
            try:
                ast.parse(source)
            except SystemError as e:
                errors.append(e)

    threshold = gc.get_threshold()
    gc.set_threshold(50)  # collections as often as a busy compile has them
    try:
        with CubinPool(get_target("h100"), threads=1):
            churn = threading.Thread(target=make_garbage)
            parsers = [threading.Thread(target=parse) for _ in range(2)]
            for t in [churn, *parsers]:
                t.start()
            for t in parsers:
                t.join()
            stop.set()
            churn.join()
    finally:
        gc.set_threshold(*threshold)
    assert not errors, errors[0]
