"""fp8 against bf16 on one checkpoint, both compiled artifacts (CUDA graphs on), and a profile
of one decode step listing the kernels that ran.

    python benchmarks/fp8_quality.py CKPT --out R.json [--prompts 64 --tokens 64]
    python benchmarks/fp8_quality.py CKPT --profile --quantization fp8 --out P.json

Quality: greedy token agreement (the fraction of the 64 x 64 generated positions where fp8
picks bf16's token, and the mean length of the common prefix) and the mean cosine of the
last-token logits of every prompt's prefill. Random prompts over the model's vocabulary,
seeded. Profile: torch.profiler over one batch-1 decode step (after warm-up), CUDA kernel
names with their summed device time, so a reader sees the fused and Helion kernels run.
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

import torch

BLOCK = 16


def engine(model: str, quantization: str | None, **kw):
    from kiln.config import EngineConfig
    from kiln.resolve import build_engine

    config = EngineConfig(model=model, compile="on_miss", quantization=quantization,
                          gpu_memory_utilization=0.85, max_model_len=2048, **kw)  # fmt: skip
    eng = build_engine(config)
    if eng.loaded.artifact_key is None or eng.loaded.runner.graphs is None:
        raise SystemExit(
            f"expected the compiled artifact under CUDA graphs: {eng.loaded.describe()}"
        )
    return eng


def release() -> None:
    """Give the GPU memory of engines no longer referenced back (their KV cache and graphs)."""
    gc.collect()
    torch.cuda.empty_cache()


def prompts(vocab: int, n: int, length: int = 32) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(n)]


def greedy(eng, batch: list[list[int]], tokens: int) -> list[list[int]]:
    from runtime.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    for i, p in enumerate(batch):
        eng.add_request(str(i), p, params)
    out = {}
    while eng.has_unfinished():
        for o in eng.step():
            if o.finished:
                out[o.request_id] = o.token_ids
    return [out[str(i)] for i in range(len(batch))]


def prefill_logits(eng, batch: list[list[int]], per_step: int = 8) -> torch.Tensor:
    """[N, V] last-token logits of each prompt's prefill, `per_step` prompts per step."""
    from model_defs.step_inputs import StepSeq

    rows = []
    for s in range(0, len(batch), per_step):
        chunk = batch[s : s + per_step]
        blocks = -(-len(chunk[0]) // BLOCK)
        step = [StepSeq(p, 0, list(range(i * blocks, (i + 1) * blocks)), True)
                for i, p in enumerate(chunk)]  # fmt: skip
        rows.append(eng.loaded.runner.execute(step).float().cpu())
    return torch.cat(rows)


def agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    same = sum(x == y for s, t in zip(a, b, strict=True) for x, y in zip(s, t, strict=True))
    total = sum(len(s) for s in a)
    prefix = []
    for s, t in zip(a, b, strict=True):
        n = next((i for i, (x, y) in enumerate(zip(s, t, strict=True)) if x != y), len(s))
        prefix.append(n)
    return {"token_agreement": same / total, "mean_common_prefix": sum(prefix) / len(prefix)}


def quality(model: str, n: int, tokens: int) -> dict:
    runs = {}
    for quant in (None, "fp8"):
        eng = engine(model, quant)
        batch = prompts(eng.loaded.vocab_size, n)
        runs[quant or "bf16"] = (greedy(eng, batch, tokens), prefill_logits(eng, batch))
        del eng
        release()
    (bf_tok, bf_logits), (q_tok, q_logits) = runs["bf16"], runs["fp8"]
    cos = torch.nn.functional.cosine_similarity(q_logits, bf_logits, dim=-1)
    return {"prompts": n, "tokens": tokens, **agreement(q_tok, bf_tok),
            "logit_cosine_mean": cos.mean().item(), "logit_cosine_min": cos.min().item()}  # fmt: skip


def profile(model: str, quantization: str | None) -> dict:
    """Kernel names and device microseconds of one batch-1 decode step (graphs replayed)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from model_defs.step_inputs import StepSeq

    eng = engine(model, quantization)
    prompt = prompts(eng.loaded.vocab_size, 1)[0]
    blocks = list(range(4))
    eng.loaded.runner.execute([StepSeq(prompt, 0, blocks, True)])
    step = [StepSeq([prompt[0]], len(prompt), blocks, True)]
    for _ in range(3):
        eng.loaded.runner.execute(step)  # warm-up (graph capture happened at load)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        eng.loaded.runner.execute(step)
        torch.cuda.synchronize()
    kernels = {}
    for e in prof.key_averages():
        device_us = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0))
        if device_us > 0 and e.device_type.name == "CUDA":
            kernels[e.key] = {"count": e.count, "device_us": round(device_us, 1)}
    del eng
    release()
    return {"quantization": quantization or "none", "kernels": kernels}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--profile", action="store_true", help="profile one decode step instead")
    ap.add_argument("--quantization", default=None, help="with --profile: none or fp8")
    args = ap.parse_args()
    from compile_cache import configure_tool_caches

    configure_tool_caches()
    card = torch.cuda.get_device_name()
    if args.profile:
        res = {"card": card, **profile(args.model, args.quantization)}
        for name, k in sorted(res["kernels"].items(), key=lambda kv: -kv[1]["device_us"]):
            print(f"{k['device_us']:>10.1f} us  x{k['count']:<4} {name[:110]}")
    else:
        res = {"card": card, **quality(args.model, args.prompts, args.tokens)}
        print(json.dumps(res))
    args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
