"""fp8 against bf16 on one checkpoint, both compiled artifacts under CUDA graphs, one engine
each in this one process: quality, decode speed and (`--profile`) the kernels of one step.

    python -m benchmarks.fp8_quality CKPT --out R.json [--lowering plan] [--profile]

Per quantization (bf16, then fp8): compile under `--lowering` (a cache hit when an earlier
run built it), load, then `kiln bench throughput`'s decode rows at batch 1 and 32 (128-token
prompts, 64 tokens out), greedy generation of `--prompts` random prompts for `--tokens`
tokens, the last-token logits of each prompt's prefill, and with `--profile` torch.profiler
over one batch-1 decode step (CUDA kernel names with their summed device time).
Quality: greedy token agreement (the fraction of the generated positions where fp8 picks
bf16's token, and the mean length of the common prefix) and the cosine of the prefill logits
(mean, min). Speed: fp8's ITL p50 over bf16's at each batch size. Random prompts over the
model's vocabulary, seeded; prefix caching off.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.artifacts import LOWERINGS, compile_variant, release, running

BLOCK = 16
DECODE = dict(batch_sizes=(1, 32), input_len=128, output_len=64)


def engine_config(model: str, quantization: str | None):
    from kiln.config import EngineConfig

    return EngineConfig(model=model, quantization=quantization, gpu_memory_utilization=0.85,
                        max_model_len=2048, enable_prefix_caching=False)  # fmt: skip


def engine(config):
    from kiln.resolve import build_engine

    eng = build_engine(config)
    on_gpu = eng.loaded.device.type == "cuda"
    if eng.loaded.artifact_key is None or (on_gpu and eng.loaded.runner.graphs is None):
        raise SystemExit(
            f"expected the compiled artifact under CUDA graphs: {eng.loaded.describe()}"
        )
    return eng


def prompts(vocab: int, n: int, length: int = 32) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (length,), generator=g).tolist() for _ in range(n)]


def greedy(eng, batch: list[list[int]], tokens: int) -> list[list[int]]:
    from runtime.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    for i, p in enumerate(batch):
        eng.add_request(f"greedy-{i}", p, params)
    out = {}
    while eng.has_unfinished():
        for o in eng.step():
            if o.finished:
                out[o.request_id] = o.token_ids
    return [out[f"greedy-{i}"] for i in range(len(batch))]


def prefill_logits(eng, batch: list[list[int]], per_step: int = 8) -> torch.Tensor:
    """[N, V] last-token logits of each prompt's prefill, `per_step` prompts per step (the
    engine is idle: its KV blocks are free to write)."""
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


def profile_step(eng) -> dict:
    """Kernel names and device microseconds of one batch-1 decode step (graphs replayed)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from model_defs.step_inputs import StepSeq

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
    return kernels


def run_one(model: str, quantization: str | None, lowering: str, opts) -> tuple[dict, tuple]:
    """(what the run reports, (greedy tokens, prefill logits)) of one quantization."""
    from kiln.benchmarking.throughput import bench_kiln
    from kiln.benchmarking.workload import Workload

    config = engine_config(model, quantization)
    compile_s, artifact = compile_variant(config, lowering)
    man = artifact.manifest
    report = {"compile_s": compile_s, "lowering": man.get("lowering"),
              "kernels": man.get("kernels"), "ops": man.get("ops")}  # fmt: skip
    eng = engine(running(config, artifact))
    try:
        vocab = eng.loaded.vocab_size
        label = {"quantization": quantization or "none"}
        report["bench"] = [{**r, **label} for r in bench_kiln(eng, Workload(**DECODE), vocab)]
        batch = prompts(vocab, opts.prompts)
        outputs = (greedy(eng, batch, opts.tokens), prefill_logits(eng, batch))
        if opts.profile and eng.loaded.device.type == "cuda":
            report["profile"] = profile_step(eng)
    finally:
        del eng
        release()
    return report, outputs


def compare(runs: dict, outputs: dict, n: int, tokens: int) -> dict:
    (bf_tok, bf_logits), (q_tok, q_logits) = outputs["bf16"], outputs["fp8"]
    cos = torch.nn.functional.cosine_similarity(q_logits, bf_logits, dim=-1)
    itl = {q: {r["batch_size"]: r["itl_p50_ms"] for r in runs[q]["bench"]} for q in runs}
    return {
        "prompts": n, "tokens": tokens, **agreement(q_tok, bf_tok),
        "logit_cosine_mean": cos.mean().item(), "logit_cosine_min": cos.min().item(),
        "fp8_over_bf16_itl": {f"bs{b}": itl["fp8"][b] / itl["bf16"][b] for b in itl["bf16"]},
    }  # fmt: skip


def print_summary(res: dict) -> None:
    q = res["quality"]
    print(f"agreement {q['token_agreement']:.4f}  common prefix {q['mean_common_prefix']:.2f}  "
          f"cosine mean {q['logit_cosine_mean']:.4f} min {q['logit_cosine_min']:.4f}")  # fmt: skip
    for quant, run in res["runs"].items():
        rows = "  ".join(f"bs{r['batch_size']} ITL {r['itl_p50_ms']:.2f} ms" for r in run["bench"])
        print(f"{quant:<5} compile {run['compile_s']:.0f} s  {rows}")
        for name, k in sorted(run.get("profile", {}).items(), key=lambda kv: -kv[1]["device_us"]):
            print(f"  {k['device_us']:>10.1f} us  x{k['count']:<4} {name[:100]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--lowering", default="piecewise", choices=LOWERINGS)
    ap.add_argument("--profile", action="store_true", help="GPU: profile one decode step each")
    opts = ap.parse_args()
    from compile_cache import configure_tool_caches
    from kiln.benchmarking.stats import card_name

    configure_tool_caches()
    runs, outputs = {}, {}
    for quantization in (None, "fp8"):
        name = quantization or "bf16"
        runs[name], outputs[name] = run_one(opts.model, quantization, opts.lowering, opts)
    res = {"card": card_name(), "model": opts.model, "lowering": opts.lowering,
           "quality": compare(runs, outputs, opts.prompts, opts.tokens), "runs": runs}  # fmt: skip
    print_summary(res)
    print(json.dumps(res["quality"]))
    opts.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
