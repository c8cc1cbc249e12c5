"""Is `fuse_rope_attention` worth turning on? Fused Triton kernel vs the unfused ops, on a GPU.

Llama-3-8B attention shapes (32 q heads, 8 KV heads, head size 128, bf16, 16-token blocks):
decode batches of 1, 8 and 32 sequences with 1024 tokens of history, and one 2048-token
prefill. Baseline, in the same run: what the compiled artifact runs without the pass
(rotary_embedding's reference compiled by Inductor, then the Triton attention kernel).
Both are timed inside CUDA graphs (`triton.testing.do_bench_cudagraph`, median ms), as
decode runs; outputs are checked against each other first.
Usage: python benchmarks/rope_attention.py --out rope_attention.json
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

SHAPE = dict(num_heads=32, num_kv_heads=8, head_size=128, block_size=16)
CASES = {"decode_bs1": [(1, 1024)], "decode_bs8": [(1, 1024)] * 8,
         "decode_bs32": [(1, 1024)] * 32, "prefill_2048": [(2048, 2048)]}  # fmt: skip


def _inputs(seqs) -> tuple:
    from ir.ops.paged_inputs import paged_inputs

    q, k, v, *rest = paged_inputs(seqs, dtype=torch.bfloat16, device="cuda", **SHAPE)
    positions = torch.randint(0, 4096, (q.shape[0],), device="cuda")
    return (positions, q, k, v, torch.randn(4096, 128, device="cuda"), True, *rest)


def _unfused():
    from ir.registry import get_op, load_kernels

    load_kernels()
    rope = torch.compile(get_op("rotary_embedding").reference, dynamic=False)
    attention = next(i.fn for i in get_op("attention").impls if i.provider == "triton")

    def run(positions, q, k, v, cache, is_neox, *rest):
        q, k = rope(positions, q, k, cache, is_neox)
        return attention(q, k, v, *rest)

    return run


def main() -> None:
    import triton.testing

    from ir.registry import get_op, load_kernels

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="rope_attention.json")
    out = parser.parse_args().out
    load_kernels()  # get_op alone registers the references only
    fused = next(i.fn for i in get_op("rope_attention").impls if i.provider == "triton")
    unfused = _unfused()
    rows = {"card": torch.cuda.get_device_name()}
    for name, seqs in CASES.items():
        args = _inputs(seqs)
        a, b = fused(*copy.deepcopy(args)), unfused(*copy.deepcopy(args))
        err = (a.float() - b.float()).abs().max().item()
        t_fused = triton.testing.do_bench_cudagraph(lambda args=args: fused(*args))
        t_unfused = triton.testing.do_bench_cudagraph(lambda args=args: unfused(*args))
        rows[name] = {"fused_ms": t_fused, "unfused_ms": t_unfused,
                      "speedup": t_unfused / t_fused, "max_abs_diff": err}  # fmt: skip
        print(f"{name:<14} fused {t_fused:.4f} ms  unfused {t_unfused:.4f} ms  "
              f"x{t_unfused / t_fused:.2f}  max|diff| {err:.2e}")  # fmt: skip
    with open(out, "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
