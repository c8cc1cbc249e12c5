"""The small-M fp8 GEMM (`ir/kernels/scaled_mm_small_m.py`) on this GPU: pick its config and
its `max_m`, against `torch._scaled_mm` (row-wise scales, what runs above max_m) and bf16
`torch.mm` at the same shapes, measured in the same run.

Shapes: Llama-3-8B's linear layers (N x K = qkv 6144x4096, o 4096x4096, gate_up 28672x4096,
down 4096x14336), M tokens. Every call reads a different copy of the weight (enough copies to
pass 256 MB, five times H200's 50 MB L2), as decode reads each layer's weight once per step;
the calls run back to back in one CUDA graph, timed with CUDA events. Bandwidth is the weight
bytes over the time, beside a device-to-device copy measured here.

1. Sweep configs at M = 1 and 16 (BLOCK_N, BLOCK_K and programs, then num_stages and
   num_warps of the best); score: the sum over the four shapes of both times. 2. With the best, BLOCK_M 16 and 32 at M = 1..64 vs
   torch._scaled_mm and bf16: max_m is the largest bucket up to which the kernel beats
   torch._scaled_mm on a whole layer (the four shapes summed). Prints the config to pin and
   writes the file (with its record) as --out/scaled_mm_small_m.<target>.json.
Usage: python benchmarks/fp8_small_m.py --out DIR [--quick]
(24 configs, each JIT-compiled for a few specializations, then 112 timings: ~2 min on an
H200, estimated; --quick sweeps two configs: ~40 s)
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
from pathlib import Path

import torch

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# Round 1: tile and split over a 4-stage pipeline; round 2: stages and warps of the best.
TILES = dict(BLOCK_N=(32, 64, 128), BLOCK_K=(128, 256, 512), programs=(132, 264))
PIPELINE = dict(num_stages=(3, 4, 6), num_warps=(4, 8))
QUICK = dict(BLOCK_N=(64, 128), BLOCK_K=(256,), programs=(264,))
ROTATE_BYTES = 256 * 2**20


def copies_for(nbytes: int) -> int:
    return max(2, math.ceil(ROTATE_BYTES / nbytes))


def time_calls(fns: list, replays: int = 20) -> float:
    """Microseconds per call of `fns` (run in turn) inside one CUDA graph."""
    for fn in fns:  # compile and warm outside capture
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in fns:
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (replays * len(fns))


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second."""
    a = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    return 2 * a.numel() / (time_calls([lambda: b.copy_(a)], replays=10) * 1e-6)


class Shape:
    """One weight shape's operands: rotating fp8 and bf16 weight copies and activations."""

    def __init__(self, n: int, k: int):
        from ir.ops.quant import quantize_weight_per_channel

        self.n, self.k = n, k
        count = copies_for(n * k)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        wq, self.w_scale = quantize_weight_per_channel(w)
        self.fp8 = [wq.clone() for _ in range(count)]
        self.bf16 = [w.clone() for _ in range(count)]
        self.x = {}

    def activation(self, m: int):
        from ir.registry import get_op

        if m not in self.x:
            x = torch.randn(m, self.k, device="cuda", dtype=torch.bfloat16)
            self.x[m] = (x, *get_op("quant_fp8").reference(x, 0))
        return self.x[m]


def time_kernel(shape: Shape, m: int, config: dict) -> float:
    from ir.kernels.scaled_mm_small_m import scaled_mm_small_m_launch as launch

    _, xq, xs = shape.activation(m)
    bf16 = torch.bfloat16
    fns = [
        lambda w=w: launch(xq, xs, w, shape.w_scale, None, bf16, config=config) for w in shape.fp8
    ]
    return time_calls(fns)


def time_scaled_mm(shape: Shape, m: int) -> float:
    _, xq, xs = shape.activation(m)
    scale_b = shape.w_scale.reshape(1, -1)
    return time_calls([
        lambda w=w: torch._scaled_mm(xq, w.t(), xs, scale_b, out_dtype=torch.bfloat16)
        for w in shape.fp8
    ])  # fmt: skip


def time_bf16(shape: Shape, m: int) -> float:
    x = shape.activation(m)[0]
    return time_calls([lambda w=w: torch.mm(x, w.t()) for w in shape.bf16])


def check(shape: Shape, m: int, config: dict) -> float:
    """Max |kernel - reference| relative to the reference's max (bf16 output)."""
    from ir.kernels.scaled_mm_small_m import scaled_mm_small_m_launch as launch
    from ir.registry import get_op

    _, xq, xs = shape.activation(m)
    args = (xq, xs, shape.fp8[0], shape.w_scale, None, torch.bfloat16)
    got, want = launch(*args, config=config), get_op("scaled_mm").reference(*args)
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


def sweep(shapes: dict, base: dict, grid: dict) -> list[dict]:
    rows = []
    for values in itertools.product(*grid.values()):
        config = dict(base, **dict(zip(grid, values, strict=True)))
        try:
            times = {f"{s}@{m}": time_kernel(shape, m, config) for s, shape in shapes.items()
                     for m in (1, 16)}  # fmt: skip
        except Exception as e:  # noqa: BLE001 (a config over the card's shared memory)
            print(f"  skip {values}: {type(e).__name__}: {str(e)[:80]}")
            continue
        rows.append({"config": config, "us": times, "score_us": sum(times.values())})
        print(f"  {values}  score {rows[-1]['score_us']:.1f} us")
    return sorted(rows, key=lambda r: r["score_us"])


def compare(shapes: dict, config: dict, copy_bw: float) -> dict:
    """Per shape and bucket: kernel (BLOCK_M 16 and 32), torch._scaled_mm, bf16 mm (us)."""
    table = {}
    for name, shape in shapes.items():
        for m in BUCKETS:
            row = {"scaled_mm_us": time_scaled_mm(shape, m), "bf16_mm_us": time_bf16(shape, m)}
            for block_m in (16, 32):
                row[f"kernel_bm{block_m}_us"] = time_kernel(shape, m, dict(config, BLOCK_M=block_m))
            best = min(row["kernel_bm16_us"], row["kernel_bm32_us"])
            row["kernel_gb_s"] = shape.n * shape.k / (best * 1e-6) / 1e9
            row["kernel_of_copy_bw"] = row["kernel_gb_s"] * 1e9 / copy_bw
            row["max_rel_err"] = check(shape, m, config)
            table[f"{name}@{m}"] = row
            print(f"  {name:<8} M={m:<3} kernel {row['kernel_bm16_us']:7.1f}/"
                  f"{row['kernel_bm32_us']:7.1f} us ({row['kernel_gb_s']:6.0f} GB/s, "
                  f"{row['kernel_of_copy_bw']:.0%} of copy)  _scaled_mm "
                  f"{row['scaled_mm_us']:7.1f}  bf16 {row['bf16_mm_us']:7.1f}")  # fmt: skip
    return table


def choose_max_m(table: dict, block_m: int) -> int:
    """The largest bucket up to which the kernel (this BLOCK_M) beats torch._scaled_mm on a
    layer (its four shapes summed), at every bucket below it too."""
    max_m = 0
    for m in BUCKETS:
        kernel = sum(table[f"{s}@{m}"][f"kernel_bm{block_m}_us"] for s in SHAPES)
        library = sum(table[f"{s}@{m}"]["scaled_mm_us"] for s in SHAPES)
        if kernel >= library:
            break
        max_m = m
    return max_m


def main() -> None:
    import triton

    from ir.kernels.base import load_config
    from ir.kernels.scaled_mm_small_m import NAME
    from ir.targets import detect_host_target

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="fp8_small_m")
    parser.add_argument("--quick", action="store_true", help="a 2-config sweep (~20 s)")
    opts = parser.parse_args()
    out = Path(opts.out)
    target = detect_host_target().name
    base = load_config(NAME, target)
    copy_bw = copy_bandwidth()
    print(f"{torch.cuda.get_device_name()} ({target}): copy {copy_bw / 1e9:.0f} GB/s")
    shapes = {name: Shape(n, k) for name, (n, k) in SHAPES.items()}
    rows = sweep(shapes, dict(base, num_stages=4, num_warps=4), QUICK if opts.quick else TILES)
    if not opts.quick:
        rows = sorted(
            rows + sweep(shapes, rows[0]["config"], PIPELINE), key=lambda r: r["score_us"]
        )
    best = rows[0]["config"]
    print(f"best: {best}")
    table = compare(shapes, best, copy_bw)
    choice = {bm: choose_max_m(table, bm) for bm in (16, 32)}
    block_m = max(choice, key=lambda bm: (choice[bm], -bm))
    pinned = dict(best, BLOCK_M=block_m, max_m=choice[block_m])
    record = {
        "card": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
        "torch": torch.__version__, "triton": triton.__version__,
        "bench": "benchmarks/fp8_small_m.py" + (" --quick" if opts.quick else ""),
        "copy_gb_s": round(copy_bw / 1e9, 1), "max_m_by_block_m": choice,
        "us": {k: {c: round(v, 2) for c, v in r.items()} for k, r in table.items()},
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))
    config_file = out / f"{NAME}.{target}.json"  # -> ir/kernels/configs/<target>/<NAME>.json
    config_file.write_text(json.dumps(dict(pinned, record=record), indent=1) + "\n")
    print(f"pin (ir/kernels/configs/{target}/{NAME}.json, full record in {config_file}):")
    print(json.dumps(pinned))


if __name__ == "__main__":
    main()
