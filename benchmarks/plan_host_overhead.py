"""Host time of one plan step with libcuda's launch stubbed: what every step outside a CUDA
graph (prefill, mixed prefill+decode, graph capture itself) pays in Python.

Writes a tiny fp32 Llama checkpoint (4 layers, hidden 64: the plan of any Llama has the same
entries and launches per layer, whatever its sizes and dtype; tiny fp32 GEMMs keep the CPU's
arithmetic, on one thread, near the cost of dispatching it),
builds its plan artifact for a GPU target on this host (`kiln compile CKPT --target h200`, no
GPU needed; the Kiln cache keeps it for the next run), loads it through the product path
(`runtime/loaders/plan.py` over `runtime/cubin_launcher.py`) with the driver of
`tests/runtime/fake_cuda.py` in place of libcuda, CPU tensors standing in for device memory,
and times `PlanProgram.__call__` on a few step shapes, in CPU time of the calling thread
(`time.thread_time`, torch on one thread): the host's work, without the time other processes on
a shared machine take from it. Per shape, medians over the repeats:
    step_us                 one step (aten ops compute on the CPU, launches are stubbed)
    per_entry_us            the step over the plan's entries
    null_launcher_step_us   the same step with a launcher that does nothing
    launcher_us_per_launch  the step's launcher calls (fn, grid, args as recorded from a step)
                            replayed through the cubin launcher, over their number
Every repeat runs each shape once with each launcher, interleaved, so load on the host hits
all alike. What loading made is frozen out of the collector's reach first, as in the engine.

    python benchmarks/plan_host_overhead.py [--target h200] [--repeats 200] [--profile 30]
        [--workdir DIR] [--out result.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.*, when run as a script

TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=320, num_hidden_layers=4)  # fmt: skip
BLOCK_SIZE, NUM_BLOCKS = 16, 64
# name -> (prompt tokens of each prefilling sequence, number of decoding sequences)
SHAPES = {
    "prefill-128": ([128], 0),
    "mixed-61+3": ([61], 3),  # 64 tokens: a prefill chunk beside three decodes
    "prefill-13": ([13], 0),  # padded to the 16-token bucket
}


def build_artifact(workdir: Path, target: str):
    from lowering.compile import CompileOptions, compile_model
    from tests.hf_models import make_checkpoint

    ckpt = workdir / "tiny-llama"
    if not (ckpt / "config.json").is_file():
        make_checkpoint(ckpt, "llama", **TINY)
    opts = CompileOptions(model=str(ckpt), target=target, dtype="float32")
    return ckpt, compile_model(opts, progress=lambda message: None).artifact


class Recorder:
    """A launcher that keeps every call (to replay them) and passes it on."""

    def __init__(self, launcher):
        self.launcher, self.calls = launcher, []

    def __call__(self, fn, grid, *args, **kwargs):
        self.calls.append((fn, grid, args, kwargs))
        return self.launcher(fn, grid, *args, **kwargs)


def launchers(driver):
    """(factory of the cubin launcher over `driver`, factory of a launcher doing nothing)."""

    def cubins(folder: Path, ids: list[str], device: torch.device):
        from runtime.cubin_launcher import CubinLauncher, CubinTable

        blobs = {i: (folder / f"{i}.cubin").read_bytes() for i in ids}
        return CubinLauncher(CubinTable.from_folder(folder, ids), blobs, device, driver)

    def null(folder: Path, ids: list[str], device: torch.device):
        return lambda fn, grid, *args, num_warps, num_stages, **kwargs: None

    return cubins, null


def step_args(loader, model, shape: str) -> list:
    """The plan's inputs, in order, for one step of `shape` (padded to the token buckets)."""
    from model_defs.attn_metadata import graph_inputs, pad_to_bucket
    from model_defs.kv_cache import allocate_kv_caches
    from model_defs.step_inputs import StepSeq, prepare_inputs

    prompts, decodes = SHAPES[shape]
    starts = iter(range(0, NUM_BLOCKS, 16))  # each sequence owns 16 blocks (256 positions)
    batch = [StepSeq(list(range(3, 3 + n)), 0, _blocks(next(starts)), True) for n in prompts]
    batch += [StepSeq([5], 40, _blocks(next(starts)), True) for _ in range(decodes)]
    step = prepare_inputs(batch, BLOCK_SIZE, "cpu")
    buckets = loader.manifest.get("token_buckets", [])
    ids, pos, attn = pad_to_bucket(step.input_ids, step.positions, step.attn, buckets)
    kv = allocate_kv_caches(model.cfg, NUM_BLOCKS, BLOCK_SIZE, torch.float32, "cpu")
    weights, _ = loader.bind_weights(model)
    named = {**weights, **graph_inputs(ids, pos, attn, kv)}
    return [named[name] for name in loader.manifest["inputs"]]


def _blocks(start: int) -> list[int]:
    return list(range(start, start + 16))


def replay_seconds(launcher, calls: list) -> float:
    t0 = time.thread_time()
    for fn, grid, args, kwargs in calls:
        launcher(fn, grid, *args, **kwargs)
    return time.thread_time() - t0


class Bench:
    """The plan loaded three times over one fake driver: with the cubin launcher, with a
    launcher doing nothing, and with the cubin launcher behind a `Recorder`."""

    def __init__(self, art, model):
        from runtime.loaders.plan import PlanLoader
        from tests.runtime.fake_cuda import RecordingDriver

        cubins, null = launchers(RecordingDriver(record=False))
        self.recorder: Recorder | None = None

        def recording(*where):
            self.recorder = Recorder(cubins(*where))
            return self.recorder

        loader, cpu = PlanLoader(art, cubins), torch.device("cpu")
        self.real = loader.load_program(cpu)
        self.null = PlanLoader(art, null).load_program(cpu)
        self.recording = PlanLoader(art, recording).load_program(cpu)
        self.args = {shape: step_args(loader, model, shape) for shape in SHAPES}
        ids = loader.manifest["inputs"].index("input_ids")
        self.tokens = {shape: int(args[ids].shape[0]) for shape, args in self.args.items()}

    def launches(self, shape: str) -> list:
        """The launcher calls of one step of `shape`, as the plan makes them."""
        self.recorder.calls = []
        self.recording(*self.args[shape])
        return self.recorder.calls

    def measure(self, repeats: int) -> dict:
        calls = {shape: self.launches(shape) for shape in self.args}
        for inputs in self.args.values():  # warm-up: configs load, caches fill
            self.real(*inputs), self.null(*inputs)
        times = {shape: ([], [], []) for shape in self.args}
        for _ in range(repeats):
            for shape, inputs in self.args.items():
                step, null_step, replay = times[shape]
                for program, out in ((self.real, step), (self.null, null_step)):
                    t0 = time.thread_time()
                    program(*inputs)
                    out.append(time.thread_time() - t0)
                replay.append(replay_seconds(self.recorder.launcher, calls[shape]))
        return {shape: self.row(shape, len(calls[shape]), *times[shape]) for shape in self.args}

    def row(self, shape: str, launches: int, step: list, null_step: list, replay: list) -> dict:
        step_us, null_us, replay_us = (
            statistics.median(t) * 1e6 for t in (step, null_step, replay)
        )
        entries = len(self.real.steps)
        return {
            "tokens": self.tokens[shape],
            "entries": entries,
            "launches": launches,
            "step_us": round(step_us, 1),
            "per_entry_us": round(step_us / entries, 2),
            "null_launcher_step_us": round(null_us, 1),
            "launcher_us_per_launch": round(replay_us / launches, 2),
        }


def profile(program, inputs: list, top: int) -> str:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(50):
        program(*inputs)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="h200")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--profile", type=int, default=0, help="print cProfile's top N (tottime)")
    ap.add_argument("--workdir", type=Path, help="where the checkpoint goes (default: temp)")
    ap.add_argument("--out", type=Path)
    opts = ap.parse_args()
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="kiln-plan-host-"))
    ckpt, art = build_artifact(workdir, opts.target)
    from model_defs.loader import load_model

    torch.set_num_threads(1)  # idle intra-op threads spin, and this host's cores are shared
    model = load_model(ckpt, torch.float32, "cpu")
    bench = Bench(art, model)
    gc.freeze()  # as the engine does once built (kiln/startup.py): collections skip start-up's heap
    rows = bench.measure(opts.repeats)
    result = {
        "benchmark": "plan_host_overhead",
        "model": "tiny Llama (4 layers, hidden 64, 4 heads of 16, 2 KV heads), fp32",
        "target": art.manifest["target"]["name"],
        "device": "cpu (libcuda stubbed)",
        "clock": "thread CPU time",
        "repeats": opts.repeats,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "shapes": rows,
    }
    print(json.dumps(result, indent=2))
    if opts.profile:
        print(profile(bench.real, bench.args["prefill-128"], opts.profile))
    if opts.out:
        opts.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
