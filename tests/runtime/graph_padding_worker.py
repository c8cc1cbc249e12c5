"""A padded decode batch through the Triton attention kernel in Triton's CPU interpreter.

Run as `TRITON_INTERPRET=1 python this.py` (the variable must be set before triton is
imported); prints JSON: how far the real rows' logits and the KV cache are from the unpadded
eager step with the reference attention.
"""

import json
import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import torch  # noqa: E402
from decode_fixtures import BLOCK, clone_kv, demo, max_kv_diff, prefilled_decode_batch, restore_kv  # noqa: E402

from model_defs.step_inputs import prepare_inputs  # noqa: E402
from runtime.cuda_graphs import StaticDecodeInputs, _RouteOps, _uncapturable, capturable_routes  # noqa: E402


@torch.inference_mode()
def main() -> dict:
    why = _uncapturable()
    if why is not None:
        sys.exit(why)
    model, runner = demo("cpu")
    batch = prefilled_decode_batch(runner, 3, seed=1)
    before = clone_kv(runner.kv_caches)
    want = runner.execute(batch)  # [3, V], reference attention
    after_eager = clone_kv(runner.kv_caches)
    restore_kv(runner.kv_caches, before)
    static = StaticDecodeInputs(8, 8, torch.device("cpu"))
    static.fill(prepare_inputs(batch, BLOCK, "cpu"), 3, 4)
    ids, pos, attn = static.views(4)
    with _RouteOps(capturable_routes()):
        got = model.compute_logits(model(ids, pos, attn, runner.kv_caches))  # [4, V]
    return {
        "logits_diff": (got[:3] - want).abs().max().item(),
        "logits_scale": want.abs().max().item(),
        "pad_row_finite": bool(torch.isfinite(got[3]).all()),
        "kv_diff": max_kv_diff(runner.kv_caches, after_eager),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
