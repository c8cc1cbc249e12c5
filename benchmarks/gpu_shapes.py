"""GPU benchmark on real model shapes with random weights (no download).

Writes a random-weight checkpoint of the shape, then: bf16 logits of Kiln vs transformers,
Kiln engine decode throughput at several batch sizes, and HF eager `generate` beside it.
Usage: python benchmarks/gpu_shapes.py --shape llama3-8b --out results.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

SHAPES = {
    "llama3-8b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        vocab_size=128256,
    ),
    "llama3.2-1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
}


def make_checkpoint(shape: str, folder: Path):
    """A random-weight bf16 checkpoint of the shape with the demo tokenizer. It is written
    beside `folder` and renamed into place, so a folder with a config.json is complete."""
    import transformers as tf

    from model_defs.demo import ensure_demo_checkpoint

    cfg = tf.LlamaConfig(
        **SHAPES[shape],
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        bos_token_id=507,
        eos_token_id=508,
    )
    part = folder.with_name(folder.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    with torch.device("cuda"):
        model = tf.LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(part)
    del model
    torch.cuda.empty_cache()
    demo = ensure_demo_checkpoint()
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(demo / f, part / f)
    shutil.rmtree(folder, ignore_errors=True)
    part.rename(folder)


def bench_engine(eng, batch: int, in_len: int, out_len: int) -> dict:
    """A warm-up run, then a timed run of `batch` fresh prompts of `in_len` tokens, each greedy
    for `out_len` tokens. Every run draws its own prompts (seeded by batch, length and run), so
    no timed prompt shares a block with one the engine has seen; the timed run fails if the
    prefix cache served any of its prompt tokens, since its TTFT would then not be a prefill."""
    from kiln.benchmarking.throughput import device_sync
    from runtime.sampling_params import SamplingParams

    p = SamplingParams(max_tokens=out_len, temperature=0, ignore_eos=True)
    sync = device_sync(eng.loaded.device)
    blocks = eng.scheduler.block_manager
    for run in range(2):  # warm-up, then timed
        prompts = run_prompts(batch, in_len, run, eng.loaded.vocab_size)
        hits_before = blocks.num_prefix_hits
        for i, pr in enumerate(prompts):
            eng.add_request(f"{batch}-{in_len}-{run}-{i}", pr, p)
        sync()
        t0 = time.perf_counter()
        step_times, first = [], None
        while eng.has_unfinished():
            s = time.perf_counter()
            eng.step()
            sync()
            step_times.append(time.perf_counter() - s)
            first = first or time.perf_counter() - t0
        total = time.perf_counter() - t0
    cached = blocks.num_prefix_hits - hits_before
    if cached:
        raise RuntimeError(f"the prefix cache served {cached} prompt tokens of the timed run")
    decode = sorted(step_times[1:]) or [0.0]
    return {
        "engine": "kiln",
        "batch": batch,
        "tok_s": batch * out_len / total,
        "ttft_s": first,
        "itl_p50_ms": decode[len(decode) // 2] * 1e3,
        "itl_p99_ms": decode[int(len(decode) * 0.99)] * 1e3,
    }


def run_prompts(batch: int, in_len: int, run: int, vocab_size: int) -> list[list[int]]:
    """`batch` random prompts of `in_len` ids, one seed per (batch, length, run): a decode run
    never draws the start of a prefill run's prompts, nor a timed run its warm-up's."""
    from kiln.benchmarking.workload import random_prompts

    return random_prompts(batch, in_len, vocab_size, (batch * 100_003 + in_len) * 2 + run)


def bench_hf(model, batch: int, in_len: int, out_len: int) -> dict:
    ids = torch.randint(600, 100000, (batch, in_len), device="cuda")
    for _ in range(2):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(
            ids, max_new_tokens=out_len, min_new_tokens=out_len, do_sample=False, pad_token_id=0
        )
        torch.cuda.synchronize()
        total = time.perf_counter() - t0
    return {"engine": "hf", "batch": batch, "tok_s": batch * out_len / total}


def logits_check(folder: Path, hf_model) -> float:
    from model_defs.kv_cache import allocate_kv_caches
    from model_defs.loader import load_model
    from model_defs.step_inputs import StepSeq
    from runtime.loaders.eager import _bind_cuda_kernels
    from runtime.model_runner import ModelRunner

    _bind_cuda_kernels()
    model = load_model(folder, torch.bfloat16, "cuda")
    kv = allocate_kv_caches(model.cfg, 16, 16, torch.bfloat16, "cuda")
    runner = ModelRunner(model, model.compute_logits, kv, 16, "cuda")
    prompt = list(range(1000, 1100))
    ours = runner.execute([StepSeq(prompt, 0, list(range(8)), True)])[0]
    with torch.no_grad():
        ref = hf_model(torch.tensor([prompt], device="cuda")).logits[0, -1].float()
    del model, kv
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def load_hf(folder: Path):
    import transformers as tf

    return tf.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).cuda().eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    ap.add_argument("--part", default="check", choices=["check", "hf", "kiln"])
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=32)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--gpu-mem", type=float, default=0.85)
    ap.add_argument("--compile", default="never", choices=["never", "cached", "on_miss"])
    args = ap.parse_args()
    folder = Path("/tmp") / f"ckpt-{args.shape}"
    res = {"card": torch.cuda.get_device_name(), "shape": args.shape, "part": args.part}
    if not (folder / "config.json").is_file():
        t0 = time.perf_counter()
        make_checkpoint(args.shape, folder)
        res["ckpt_write_s"] = time.perf_counter() - t0
    batches = list(map(int, args.batch_sizes.split(",")))
    if args.part == "check":
        res["bf16_logits_rel_err"] = logits_check(folder, load_hf(folder))
    elif args.part == "hf":
        hf = load_hf(folder)
        res["rows"] = [bench_hf(hf, b, args.input_len, args.output_len) for b in batches]
    else:
        from kiln.config import EngineConfig
        from kiln.resolve import build_engine

        eng = build_engine(
            EngineConfig(
                str(folder),
                compile=args.compile,
                max_num_seqs=max(batches),
                gpu_memory_utilization=args.gpu_mem,
                max_model_len=2048,
                enable_prefix_caching=False,  # every prompt token computed
            )
        )
        res["startup_phases"] = eng.loaded.phases
        res["activation_peak_bytes"] = eng.loaded.activation_peak_bytes
        res["kv_blocks"] = eng.loaded.scheduler_config.num_blocks
        res["rows"] = [bench_engine(eng, b, args.input_len, args.output_len) for b in batches]
    print(json.dumps(res), flush=True)
    args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
