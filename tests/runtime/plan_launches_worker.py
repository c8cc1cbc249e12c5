"""Record a plan's launches on the CPU, libcuda stubbed: `python this.py ARTIFACT CHECKPOINT
OUT.json host-only|triton` (a process of its own: host-only mode holds for a whole process).

`triton` imports Triton before the plan loads, so the kernels are Triton's own `JITFunction`s;
`host-only` imports nothing first and permits host-only mode (as `kiln serve`'s engine core
does), so the plan loader loads them host-only. Each step shape of
`benchmarks/plan_host_overhead.py` runs once through the cubin launcher over the driver of
`tests/runtime/fake_cuda.py`; every launch is written down as the kernel body made it (kernel
name, grid, arguments) and as the driver got it (function handle, grid, block, shared memory,
and each packed parameter, a pointer to a tensor argument named by the argument's position),
with the Triton modules this process imported.
"""

import ctypes
import json
import sys
from pathlib import Path

if sys.argv[4] == "triton":
    import triton  # noqa: F401

import torch

from benchmarks.plan_host_overhead import SHAPES, launchers, step_args
from ir.host_triton import host_only, permit_host_only
from model_defs.loader import load_model
from runtime.loaders import read_artifact
from runtime.loaders.plan import PlanLoader
from tests.runtime.fake_cuda import RecordingDriver


class Recording:
    """The cubin launcher, writing down every launch it is given and what reached the driver."""

    def __init__(self, launcher, driver: RecordingDriver):
        self.launcher, self.driver = launcher, driver
        self.launches: list[dict] = []

    def __call__(self, fn, grid, *args, num_warps, num_stages, **kwargs):
        before = len(self.driver.lib.launches)
        self.launcher(fn, grid, *args, num_warps=num_warps, num_stages=num_stages, **kwargs)
        launch = {
            "kernel": fn.__name__, "grid": list(grid), "args": [_described(a) for a in args],
            "num_warps": num_warps, "num_stages": num_stages,
        }  # fmt: skip
        if len(self.driver.lib.launches) > before:
            launch["driver"] = self.driven(self.driver.lib.launches[-1], args)
        self.launches.append(launch)

    def driven(self, call: tuple, args: tuple) -> dict:
        function, x, y, z, block, _, _, shared, stream, params, _ = call
        packed = next(
            p for site in self.launcher.sites.values() for p in site.packed.values()
            if p.params_address == params
        )  # fmt: skip
        slots = (ctypes.c_void_p * len(packed.params)).from_address(params)
        pointers = {
            a.data_ptr(): f"&{i}" for i, a in reversed(list(enumerate(args)))
            if isinstance(a, torch.Tensor)
        }  # fmt: skip
        values = [ctypes.c_uint64.from_address(slot).value for slot in slots]
        return {"cubin": packed.meta["id"], "function": function, "grid": [x, y, z],
                "block": block, "shared": shared, "stream": stream,
                "params": [pointers.get(v, v) for v in values]}  # fmt: skip


def _described(value):
    if isinstance(value, torch.Tensor):
        return ["tensor", str(value.dtype), list(value.shape), list(value.stride()),
                value.storage_offset()]  # fmt: skip
    return [type(value).__name__, repr(value)]


def main(artifact: str, checkpoint: str, out: str) -> None:
    torch.set_num_threads(1)
    driver = RecordingDriver()
    cubins, _ = launchers(driver)
    made: dict[str, Recording] = {}

    def factory(folder: Path, ids: list[str], device: torch.device) -> Recording:
        made["launcher"] = Recording(cubins(folder, ids, device), driver)
        return made["launcher"]

    loader = PlanLoader(read_artifact(Path(artifact)), factory)
    program = loader.load_program(torch.device("cpu"))
    model = load_model(Path(checkpoint), torch.float32, "cpu")
    launches = {}
    for shape in SHAPES:
        made["launcher"].launches = []
        program(*step_args(loader, model, shape))
        launches[shape] = made["launcher"].launches
    compilers = sorted(
        m for m in sys.modules if m.split(".")[0] in ("triton", "helion") or
        m.startswith(("torch._inductor", "torch._dynamo"))
    )  # fmt: skip
    result = {"host_only": host_only(), "compiler_modules": compilers, "launches": launches}
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[4] == "host-only":
        permit_host_only()
    main(*sys.argv[1:4])
