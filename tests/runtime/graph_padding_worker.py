"""Padded steps (a decode batch, and decodes mixed with prompts) through the Triton attention
kernel in Triton's CPU interpreter, laid out as the CUDA graphs' static inputs lay them out.

Run as `TRITON_INTERPRET=1 python this.py` (the variable must be set before triton is
imported); prints JSON: how far the real rows' logits and the KV cache are from the unpadded
eager step with the reference attention.
"""

import json
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402
from decode_fixtures import (  # noqa: E402
    BLOCK,
    clone_kv,
    demo,
    max_kv_diff,
    prefilled_decode_batch,
    prefilled_mixed_batch,
    restore_kv,
)

from model_defs.step_inputs import StepSeq  # noqa: E402
from runtime.cuda_graphs import (  # noqa: E402
    CUDAGraphConfig,
    StaticStepInputs,
    _RouteOps,
    _uncapturable,
    capturable_routes,
)


def padded(model, runner, batch, bucket: int) -> dict:
    """The batch eagerly (reference attention) against the batch filled into the static
    inputs of `bucket` tokens and run with the Triton attention."""
    before = clone_kv(runner.kv_caches)
    want = runner.execute(batch)  # [N, V], reference attention
    after_eager = clone_kv(runner.kv_caches)
    restore_kv(runner.kv_caches, before)
    static = StaticStepInputs(CUDAGraphConfig(8, 8, max_num_tokens=64), torch.device("cpu"))
    stale = [StepSeq([7 + i] * 8, 10 + i, [i, i + 8], True) for i in range(8)]  # every row set
    static.fill(stale, BLOCK, 64)
    static.fill(batch, BLOCK, bucket)
    ids, pos, attn, rows = static.views(bucket)
    with _RouteOps(capturable_routes()):
        hidden = model(ids, pos, attn, runner.kv_caches)  # [bucket, H]
    got = model.compute_logits(hidden.index_select(0, rows))  # [seqs(bucket), V]
    return {
        "logits_diff": (got[: len(want)] - want).abs().max().item(),
        "logits_scale": want.abs().max().item(),
        "pad_rows_finite": bool(torch.isfinite(hidden).all()),
        "kv_diff": max_kv_diff(runner.kv_caches, after_eager),
    }


@torch.inference_mode()
def main() -> dict:
    why = _uncapturable()
    if why is not None:
        sys.exit(why)
    model, runner = demo("cpu")
    decode = padded(model, runner, prefilled_decode_batch(runner, 3, seed=1), 4)
    mixed = prefilled_mixed_batch(runner, 3, seed=2)  # 3 + 21 + 9 = 33 tokens, 5 sequences
    return {"decode": decode, "mixed": padded(model, runner, mixed, 64)}


if __name__ == "__main__":
    print(json.dumps(main()))
