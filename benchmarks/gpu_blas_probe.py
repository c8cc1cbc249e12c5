"""What cuBLAS's first GEMM in a process costs, and whether a small GEMM run first (on this
thread or a side thread) pays it for the model's shapes. Each ORDER runs in a fresh process:
    python3 benchmarks/gpu_blas_probe.py ORDER     ORDER: lm | tiny,lm | thread,lm | tiny,qkv,lm
Prints one JSON line: seconds per step, each followed by a synchronize.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import torch
import torch.nn.functional as F

BF16 = torch.bfloat16


def main(order: str) -> None:
    device = torch.device("cuda")
    torch.zeros(1, device=device)  # context and allocator up, as after the weight read
    torch.cuda.synchronize()
    x = torch.zeros(64, 4096, dtype=BF16, device=device)
    weights = {
        "lm": torch.zeros(128256, 4096, dtype=BF16, device=device),
        "qkv": torch.zeros(6144, 4096, dtype=BF16, device=device),
        "down": torch.zeros(4096, 14336, dtype=BF16, device=device),
    }
    tiny = torch.zeros(16, 16, dtype=BF16, device=device)
    out: dict[str, float] = {}

    def side() -> None:
        with torch.cuda.stream(torch.cuda.Stream(device)):
            tiny @ tiny
            torch.cuda.current_stream().synchronize()

    for step in order.split(","):
        t0 = time.perf_counter()
        if step == "tiny":
            tiny @ tiny
        elif step == "thread":
            th = threading.Thread(target=side)
            th.start()
            th.join()
        elif step == "down":
            F.linear(torch.zeros(64, 14336, dtype=BF16, device=device), weights["down"])
        else:
            F.linear(x, weights[step])
        torch.cuda.synchronize()
        out[f"{len(out)}:{step}"] = round(time.perf_counter() - t0, 4)
    print(json.dumps({"card": torch.cuda.get_device_name(device), "order": order, "s": out}))


if __name__ == "__main__":
    main(sys.argv[1])
