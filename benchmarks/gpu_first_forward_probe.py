"""Where the first decode forward of a warm start spends its time (the first CUDA graph bucket
costs ~0.19 s on the H200 against ~0.01-0.03 s for each later one).

Loads CKPT's cached artifact without CUDA graphs, then times, each followed by a synchronize:
the cuBLAS handle, one lm_head GEMM, and the forward at the largest and smallest decode
buckets, twice each. Usage (device, after the artifact is built):
    python3 benchmarks/gpu_first_forward_probe.py CKPT
"""

from __future__ import annotations

import json
import sys
import time

from compile_cache import configure_bytecode_cache, configure_tool_caches


def main(ckpt: str) -> None:
    configure_bytecode_cache()
    configure_tool_caches()
    import torch

    from runtime.cuda_graphs import StaticDecodeInputs
    from runtime.engine import Engine

    eng = Engine.from_args(ckpt, compile="cached", enforce_eager=True)
    runner = eng.loaded.runner
    device = runner.device
    torch.cuda.synchronize(device)
    out: dict[str, float] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        torch.cuda.synchronize(device)
        out[name] = round(time.perf_counter() - t0, 4)

    static = StaticDecodeInputs(64, -(-eng.max_model_len // runner.block_size), device)
    hidden = runner.forward.lm_head.shape[1] if hasattr(runner.forward, "lm_head") else 4096
    x = torch.zeros(64, hidden, dtype=torch.bfloat16, device=device)
    timed("blas_handle", lambda: torch.cuda.current_blas_handle())
    timed("lm_head_gemm_1st", lambda: runner.compute_logits(x))
    timed("lm_head_gemm_2nd", lambda: runner.compute_logits(x))
    for bucket in (64, 1):
        ids, pos, attn = static.views(bucket)
        for n in ("1st", "2nd"):
            timed(f"forward_{bucket}_{n}", runner.forward, ids, pos, attn, runner.kv_caches)
    print(json.dumps({"card": torch.cuda.get_device_name(device), "seconds": out}))


if __name__ == "__main__":
    main(sys.argv[1])
