"""Host-only kernels (`ir/host_triton.py`): in a process without Triton, the kernel modules and
a stored Helion-style source load with no Triton imported, the cubin launcher keys each of
their `HostKernel`s exactly as it keys Triton's own `JITFunction` for the same source (name,
source hash, parameters: two derivations, one per process, compared), their host code
launches the same, and launching one through the JIT fails saying why. No kernel module
imports Triton other than through `ir.host_triton`; a process that has Triton (this one, or
one whose kernel modules got it) never enters host-only mode."""

from __future__ import annotations

import ast
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

from ir.host_triton import TRITON, HostKernel, cdiv, constexpr, host_builtins
from ir.host_triton import jit as host_jit
from ir.host_triton import next_power_of_2 as host_next_power_of_2
from kiln.errors import KilnError
from runtime.loaders.plan import import_source
from tests.ir.host_triton_worker import host_launches, kernel_modules, keys

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "ir" / "kernels"
WORKER = Path(__file__).with_name("host_triton_worker.py")

# What Helion generates for a kernel (two of them here, one jit with options), before
# `strip_helion_launcher` makes it the plain module a plan artifact stores.
HELION_CODE = """from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch._inductor.runtime.triton_compat import libdevice
from helion.runtime import default_launcher as _default_launcher

_BLOCK_SIZE_1 = tl.constexpr(64)

@triton.jit
def _helion_scale_kernel(x, out, x_stride_0, n, eps, _RDIM_SIZE_1: tl.constexpr):
    pid_0 = tl.program_id(0)
    indices_1 = tl.arange(0, _RDIM_SIZE_1).to(tl.int32)
    mask_1 = indices_1 < n
    v = tl.load(x + pid_0 * x_stride_0 + indices_1, mask_1, other=0)
    tl.store(out + pid_0 * x_stride_0 + indices_1, libdevice.rsqrt(v + eps), mask_1)

@triton.jit(do_not_specialize=["n"])
def _helion_copy_kernel(src, dst, n):
    offsets = tl.program_id(0) * _BLOCK_SIZE_1 + tl.arange(0, _BLOCK_SIZE_1)
    tl.store(dst + offsets, tl.load(src + offsets, offsets < n), offsets < n)

def scale_kernel(x: torch.Tensor, eps: float, *, _launcher=_default_launcher):
    m, n = x.size()
    out = torch.empty([m, n], dtype=x.dtype, device=x.device)
    _RDIM_SIZE_1 = max(triton.next_power_of_2(n), 1)
    _launcher(_helion_scale_kernel, (m,), x, out, x.stride(0), n, eps, _RDIM_SIZE_1, num_warps=4, num_stages=1)
    _BLOCK_SIZE_1 = 64
    _launcher(_helion_copy_kernel, (triton.cdiv(m * n, _BLOCK_SIZE_1),), out, x, m * n, num_warps=4, num_stages=1)
    return out
"""


def _run_worker(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, *(["-c", code] if code else [str(WORKER)]), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def host_only_run(tmp_path_factory):
    """(the stored source, what the worker wrote)."""
    from ir.kernels.helion_util import strip_helion_launcher

    folder = tmp_path_factory.mktemp("host-only")
    source = folder / "src-host-only-kernels.py"
    source.write_text(strip_helion_launcher(HELION_CODE))
    proc = _run_worker("", str(source), str(folder / "out.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return source, json.loads((folder / "out.json").read_text())


def _jit_functions() -> set[str]:
    """`module.function` of every `@triton.jit` function defined in ir/kernels/*.py."""
    found = set()
    for path in KERNELS.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                ast.unparse(d).startswith("triton.jit") for d in node.decorator_list
            ):
                found.add(f"ir.kernels.{path.stem}.{node.name}")
    return found


def test_no_kernel_module_imports_triton_but_through_host_triton():
    for path in KERNELS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            bad = [n for n in names if n.split(".")[0] == "triton"]
            assert not bad, (
                f"{path.relative_to(ROOT)}:{node.lineno} imports {bad[0]}: write "
                "`from ir.host_triton import tl, triton` (docs/writing-a-kernel.md)"
            )


def test_the_launcher_keys_each_host_kernel_as_it_keys_tritons_own(host_only_run):
    source, run = host_only_run
    want = keys([*kernel_modules(), import_source(source)], JITFunction)
    stored = f"kiln_plan_{source.stem.replace('-', '_')}"
    stored_kernels = {f"{stored}._helion_scale_kernel", f"{stored}._helion_copy_kernel"}
    assert _jit_functions() | stored_kernels <= set(want)
    assert run["keys"] == want
    # The source hashed starts at the decorator: a decorated function's code starts there.
    kernels = [v for m in kernel_modules() for v in vars(m).values() if isinstance(v, JITFunction)]
    assert all(inspect.getsource(k.fn).startswith("@triton.jit") for k in kernels)
    assert ["_RDIM_SIZE_1", True] in want[f"{stored}._helion_scale_kernel"][2]


def test_stored_host_code_launches_the_same_host_only(host_only_run):
    source, run = host_only_run
    assert run["triton_modules"] == []
    assert run["launches"] == host_launches(import_source(source))


def test_launching_a_host_kernel_through_the_jit_says_triton_is_not_loaded(host_only_run):
    _, run = host_only_run
    for what in ("kernel module", "stored source"):
        assert (
            "cannot run through Triton's JIT: this process loaded its kernels host-only"
            in (run["errors"][what])
        )
    assert run["errors"]["compiler attribute"].startswith("_attention_kernel.params is Triton's")
    assert run["errors"]["compile"].startswith("compiling demo (a cache miss) needs Triton, but")
    assert run["errors"]["kernel module"].startswith("kernel _attention_kernel ")
    assert run["errors"]["other name"].startswith("triton.language.program_id was called")
    kernel = HostKernel(_axpy)
    for launch in (lambda: kernel[(1,)], lambda: kernel(1, 2)):
        with pytest.raises(KilnError, match="kernel _axpy cannot run through Triton's JIT"):
            launch()


def _axpy(x, n, BLOCK: tl.constexpr):
    pass


def test_jit_in_both_forms_keeps_the_function_under_its_names():
    for kernel in (host_jit(_axpy), host_jit(debug=True)(_axpy)):
        assert isinstance(kernel, HostKernel) and kernel.fn is _axpy
        assert (kernel.__name__, kernel.__qualname__, kernel.__module__) == (
            "_axpy", "_axpy", __name__,
        )  # fmt: skip


def test_the_stand_ins_host_helpers_compute_as_tritons():
    # Triton's as plain functions (a Triton whose helpers are constexpr functions wraps them).
    want_pow2 = getattr(triton.next_power_of_2, "fn", triton.next_power_of_2)
    want_cdiv = getattr(triton.cdiv, "fn", triton.cdiv)
    ints = [*range(0, 2100), 2**31 - 1, 2**31, 2**31 + 1, 2**40 + 3, 2**62 + 1]
    for n in ints:
        assert host_next_power_of_2(n) == want_pow2(n), n
        for div in (1, 3, 16, 128):
            assert cdiv(n, div) == want_cdiv(n, div), (n, div)
    assert constexpr(8).value == 8


def test_stored_source_imports_get_the_stand_ins_and_others_the_real_modules():
    namespace = {"__builtins__": host_builtins()}
    code = (
        "import torch\nimport triton\nimport triton.language as tl\n"
        "from triton.language.extra import libdevice\nfrom triton import cdiv\n"
    )
    exec(code, namespace)
    import torch

    assert namespace["torch"] is torch
    assert namespace["triton"] is TRITON and namespace["tl"] is TRITON.language
    assert namespace["cdiv"] is cdiv
    assert repr(namespace["libdevice"]) == (
        "<host-only stand-in for triton.language.extra.libdevice>"
    )
    assert sys.modules["triton"] is triton  # nothing swapped in sys.modules
    assert sys.modules["triton.language"] is tl


def test_host_only_mode_needs_the_process_permission_and_no_triton():
    # Permitted, but Triton is imported (as in this process), or the kernel modules got
    # Triton's modules (even with Triton gone from sys.modules since): never host-only.
    prelude = "import sys\nfrom ir.host_triton import enter_host_only, permit_host_only\n"
    with_triton = "import triton\npermit_host_only()\nassert not enter_host_only()\n"
    kernels_got_triton = (
        "import ir.kernels\n"
        "for name in [m for m in sys.modules if m.split('.')[0] == 'triton']:\n"
        "    del sys.modules[name]\n"
        "permit_host_only()\nassert not enter_host_only()\n"
    )
    # Not permitted (any process but `kiln serve`'s engine core), then permitted.
    permission = "assert not enter_host_only()\npermit_host_only()\nassert enter_host_only()\n"
    for code in (with_triton, kernels_got_triton, permission):
        proc = _run_worker(prelude + code)
        assert proc.returncode == 0, proc.stderr[-3000:]
