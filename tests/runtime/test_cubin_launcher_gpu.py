"""The cubin launcher on its own (GPU): a kernel compiled by `lowering.plan_kernels` for this
GPU, specialized and generic, launched through the CUDA driver with the specialized cubin
where the arguments allow and the generic one where they do not (launch after launch, as the
token count changes, through the memo of its launch site), eagerly and inside a captured CUDA
graph, against torch."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

pytestmark = pytest.mark.gpu


@triton.jit
def _axpy(x, y, out, n, alpha, stride, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    v = alpha * tl.load(x + i * stride, mask=m) + tl.load(y + i, mask=m)
    tl.store(out + i, v, mask=m)


def _launch(launcher, x, y, n, stride=1):
    out = torch.empty(n, device="cuda")
    grid = (triton.cdiv(n, 64),)
    launcher(_axpy, grid, x, y, out, n, 0.5, stride, 64, num_warps=4, num_stages=2)
    return out


@pytest.fixture(scope="module")
def launcher():
    from ir.targets import detect_host_target
    from lowering.cross import Launch
    from lowering.plan import RecordedLaunch
    from lowering.plan_kernels import compile_jobs, plan_jobs
    from runtime.cubin_launcher import CubinLauncher, CubinTable

    x = torch.randn(4096, device="cuda")
    example = (x, x, x, 4096, 0.5, 1, 64)
    rec = RecordedLaunch("axpy", Launch(_axpy, (64,), example, 4, 2), __name__)
    jobs, _ = plan_jobs([rec])
    cubins = compile_jobs(jobs, detect_host_target(), threads=1)
    table = CubinTable([c.metadata for c in cubins])
    return CubinLauncher(table, {c.id: c.data for c in cubins}, torch.device("cuda"))


def test_specialized_and_generic_cubins_compute_what_torch_does(launcher):
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    torch.testing.assert_close(_launch(launcher, x, y, 4096), 0.5 * x + y)  # specialized
    n = 1001  # not a multiple of 16, x misaligned by 4 bytes, stride 2: the generic cubin
    got = _launch(launcher, x[1:], y, n, stride=2)
    torch.testing.assert_close(got, 0.5 * x[1:][::2][:n] + y[:n])


def test_launch_after_launch_the_sizes_pick_the_cubin(launcher):
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    for n, stride, offset in [(4096, 1, 0), (1001, 1, 0), (2048, 1, 0), (1024, 2, 0),
                              (2048, 1, 1), (4096, 1, 0)]:  # fmt: skip
        xs = x[offset:]
        got = _launch(launcher, xs, y, n, stride=stride)
        torch.testing.assert_close(got, 0.5 * xs[::stride][:n] + y[:n], msg=f"n={n}")


def test_a_captured_graph_replays_the_launch(launcher):
    x, y = torch.randn(2048, device="cuda"), torch.randn(2048, device="cuda")
    _launch(launcher, x, y, 2048)  # warm-up outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = _launch(launcher, x, y, 2048)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, 0.5 * x + y)
