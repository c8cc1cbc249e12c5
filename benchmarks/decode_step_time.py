"""Where a decode step's wall time goes: the engine's host phases against the device time of
the forward, per batch size.

    python -m benchmarks.decode_step_time CKPT [--quantization fp8] [--batch-sizes 1,32]
        [--steps 48] --out R.json

The engine is built as `kiln bench throughput` builds it (the cached compiled artifact, CUDA
graphs on a GPU). Per batch size: one warm-up batch, then a batch of 128-token random prompts
decoded for `--steps` steps after their prefill. Each decode step (every scheduled sequence
decodes one token) is split by timers wrapped around the engine's own functions:

- `schedule`: `Scheduler.schedule`;
- `prepare`: `prepare_inputs`, or `StaticStepInputs.fill` for a graph's step (the step's
  token ids, positions, slots and block tables, written on the host and copied to the
  device);
- `forward`: the rest of `ModelRunner.execute` (on a GPU the graph's replay, which computes
  the logits too: host time to launch, not to run; on the CPU the forward itself);
- `sample`: `sample`, which reads the tokens back, so it waits for the device to finish;
- `update`: `Scheduler.update` (appending the tokens, block bookkeeping);
- `rest`: the remainder of `Engine.step` (stop checks, detokenization, the outputs).

On a GPU with CUDA graphs, CUDA events around each graph's replay give the step's device time
(`device`: the graph's kernels and the gaps between them; eager GPU steps: the events are
around `ModelRunner.execute`). `idle` = step wall - device is the time the GPU does not run
the step's graph: every host phase above outside the replay's own launch, plus the small
copies before and after it, since the loop is synchronous (sample waits for the device, then
the host schedules and prepares the next step). Medians in microseconds; the JSON keeps every
step's figures. A batch size with no full decode step (more sequences than the engine runs at
once) is reported as skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

PHASES = ("schedule", "prepare", "forward", "sample", "update", "rest")


class StepTimer:
    """Wraps the engine's phase functions with wall-clock timers (and, on a GPU, CUDA events
    around the forward) and keeps one record per step."""

    def __init__(self, engine):
        import runtime.cuda_graphs as graphs_mod
        import runtime.engine as engine_mod
        import runtime.model_runner as runner_mod

        self.engine, self.cuda = engine, engine.loaded.device.type == "cuda"
        self.current: dict[str, float] = {}
        self.events: tuple | None = None
        self.steps: list[dict] = []
        self._undo = []
        self._wrap(engine.scheduler, "schedule", "schedule")
        self._wrap(engine.scheduler, "update", "update")
        self._wrap(runner_mod, "prepare_inputs", "prepare")  # an eager step
        self._wrap(graphs_mod, "prepare_inputs", "prepare")  # a step past the graphs' buckets
        self._wrap(graphs_mod.StaticStepInputs, "fill", "prepare")  # a graph's step
        self._wrap(engine_mod, "sample", "sample")
        graphs = self.cuda and engine.loaded.runner.graphs is not None
        self._wrap(engine.loaded.runner, "execute", "execute", device=self.cuda and not graphs)
        if graphs:  # the class's method: every bucket's graph, captured now or later
            self._wrap(torch.cuda.CUDAGraph, "replay", "replay", device=True)

    def _wrap(self, owner, name: str, phase: str, device: bool = False) -> None:
        original = getattr(owner, name)
        self._undo.append((owner, name, vars(owner).get(name)))  # None: not its own attribute

        def timed(*args, **kwargs):
            if device and self.cuda:
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.current[phase] = self.current.get(phase, 0.0) + time.perf_counter() - t0
                if device and self.cuda:
                    end.record()
                    self.events = (start, end)

        setattr(owner, name, timed)

    def step(self) -> list:
        self.current, self.events = {}, None
        t0 = time.perf_counter()
        outputs = self.engine.step()
        wall = time.perf_counter() - t0
        if self.cuda:
            torch.cuda.synchronize()
        spent = {p: t * 1e6 for p, t in self.current.items()}
        spent["forward"] = spent.pop("execute", 0.0) - spent.get("prepare", 0.0)
        spent.pop("replay", None)  # inside execute: part of forward
        record = {p: spent.get(p, 0.0) for p in PHASES[:-1]}
        record["rest"] = wall * 1e6 - sum(record.values())
        record["wall"] = wall * 1e6
        if self.events is not None:
            record["device"] = self.events[0].elapsed_time(self.events[1]) * 1e3
        self.steps.append(record)
        return outputs

    def restore(self) -> None:
        """Undo the wraps: an instance's own attribute is removed (its class's method shows
        again), a module's or class's is put back."""
        for owner, name, own in reversed(self._undo):
            if own is None:
                delattr(owner, name)
            else:
                setattr(owner, name, own)
        self._undo.clear()


def decode_steps(engine, batch_size: int, steps: int, vocab: int, seed: int) -> list[dict]:
    """Per-step records of `steps` decode steps of a batch (its prefill steps are dropped)."""
    from runtime.sampling_params import SamplingParams

    gen = torch.Generator().manual_seed(seed)
    params = SamplingParams(max_tokens=steps + 1, temperature=0.0, ignore_eos=True)
    for i in range(batch_size):
        prompt = torch.randint(0, vocab, (128,), generator=gen).tolist()
        engine.add_request(f"step-time-{seed}-{i}", prompt, params)
    timer = StepTimer(engine)
    try:
        while engine.has_unfinished():
            sched_before = len(timer.steps)
            timer.step()
            last = engine.last_schedule
            decoding = last.scheduled and all(s.num_new_tokens == 1 for s in last.scheduled)
            if not decoding or len(last.scheduled) != batch_size:
                timer.steps.pop(sched_before)  # a prefill, or a partial batch
    finally:
        timer.restore()
    return timer.steps


def summary(steps: list[dict]) -> dict:
    keys = [*PHASES, "wall", *(["device"] if steps and "device" in steps[0] else [])]
    out = {k: round(statistics.median(s[k] for s in steps), 1) for k in keys}
    if "device" in out:
        out["idle"] = round(statistics.median(s["wall"] - s["device"] for s in steps), 1)
    out["steps"] = len(steps)
    return out


def main(argv: list[str] | None = None) -> None:
    from benchmarks.fp8_quality import engine_config
    from kiln.benchmarking.stats import card_name
    from kiln.resolve import build_engine

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--quantization", default=None)
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--compile", default="on_miss", help="the engine's compile mode")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    config = engine_config(args.checkpoint, args.quantization)
    engine = build_engine(dataclasses.replace(config, compile=args.compile))
    vocab = engine.loaded.vocab_size
    rows, raw = {}, {}
    decode_steps(engine, 2, 8, vocab, seed=0)  # warm-up: every phase's first call
    for i, bs in enumerate(int(b) for b in args.batch_sizes.split(",")):
        steps = decode_steps(engine, bs, args.steps, vocab, seed=i + 1)
        if not steps:
            print(f"batch {bs}: skipped, no step decoded all {bs} sequences at once", flush=True)
            continue
        rows[bs], raw[bs] = summary(steps), steps
        print(json.dumps({"batch_size": bs, **rows[bs]}), flush=True)
    result = {
        "card": card_name(), "checkpoint": args.checkpoint, "quantization": args.quantization,
        "artifact": engine.loaded.describe(), "unit": "us", "medians": rows, "steps": raw,
    }  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
