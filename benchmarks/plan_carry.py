"""A plan artifact built on a host without the GPU, carried to one and served there.

On the build host (a laptop or CI box; no GPU needed):
    python benchmarks/plan_carry.py build DIR --target h200 [--shapes llama3.2-1b llama3-8b]
writes tiny fp32 checkpoints of every family (fixed seeds) and their plan artifacts, and plan
artifacts of real model shapes built from shape-only checkpoints: sparse files of zeros with
the real tensor names and shapes (a bf16 plan embeds no weights, so the build reads the config,
the names and the shapes; on the GPU host the artifact serves a checkpoint with real weights).
On the GPU host, after copying DIR there:
    python benchmarks/plan_carry.py check DIR --out results.json
rebuilds the same tiny checkpoints, builds a plan of each natively on that GPU, and compares
the greedy tokens of the carried artifact with the native one's and the eager reference's
(decode under CUDA graphs). Real shapes are benchmarked with benchmarks/piecewise_bench.py
(see benchmarks/gpu_plan.sh), giving it the carried artifact, and their logits compared with
a native artifact's on a mixed prefill and two decode steps:
    python benchmarks/plan_carry.py compare CKPT CARRIED NATIVE --out logits.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("llama", "llama3", "qwen2", "qwen3", "mistral")
# Odd sizes: hidden 96, 6 query / 2 KV heads of 16, vocabulary 320, 3 layers.
ODD = dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=16,
           num_hidden_layers=3)  # fmt: skip
PROMPTS = [[5, 17, 3, 99, 42, 7], [11, 12, 13], list(range(20, 61))]


def tiny_checkpoint(folder: Path, family: str) -> Path:
    from tests.hf_models import add_demo_tokenizer, make_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    make_checkpoint(folder, family, seed=FAMILIES.index(family), **ODD)
    add_demo_tokenizer(folder)
    return folder


def shape_only_checkpoint(folder: Path, shape: str) -> Path:
    """config.json, the demo tokenizer and one sparse safetensors file of zeros holding every
    bf16 tensor of the shape (no disk blocks are written for the data)."""
    import transformers as tf

    from benchmarks.gpu_shapes import SHAPES
    from tests.hf_models import add_demo_tokenizer, make_shape_only_checkpoint

    cfg = tf.LlamaConfig(
        **SHAPES[shape], max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_theta=500000.0, bos_token_id=507, eos_token_id=508,
    )  # fmt: skip
    make_shape_only_checkpoint(folder, cfg)
    add_demo_tokenizer(folder)
    return folder


def kiln_compile(model: Path, *args: str, env: dict | None = None) -> tuple[dict, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "kiln", "compile", str(model), "--json", "--no-record", *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})},
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"kiln compile {model} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout), time.perf_counter() - start


def build(into: Path, target: str, shapes: list[str]) -> None:
    rows = []
    for family in FAMILIES:
        ckpt = tiny_checkpoint(into / "ckpt" / family, family)
        out, wall = kiln_compile(ckpt, "--target", target, "--dtype", "float32")
        rows.append(_built(into, family, out, wall))
    for shape in shapes:
        ckpt = shape_only_checkpoint(into / "ckpt" / shape, shape)
        out, wall = kiln_compile(ckpt, "--target", target, "--max-num-batched-tokens", "2048")
        rows.append(_built(into, shape, out, wall))
    (into / "built.json").write_text(json.dumps(rows, indent=2))


def _built(into: Path, name: str, out: dict, wall: float) -> dict:
    """Copy the artifact next to the checkpoints (the cache may not travel) and record it."""
    import shutil

    dest = into / "artifacts" / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(out["artifact"], dest)
    man = out["manifest"]
    row = {"name": name, "artifact": str(dest.relative_to(into)), "lowering": man["lowering"],
           "target": man["target"]["name"], "compile_wall_s": round(wall, 2),
           "host_has_gpu": _host_has_gpu()}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def _host_has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def greedy(model: Path, **engine) -> tuple[list[list[int]], bool]:
    import gc

    import torch

    from kiln.llm import LLM
    from runtime.sampling_params import SamplingParams

    llm = LLM(str(model), dtype="float32", gpu_memory_utilization=0.1, max_model_len=256, **engine)
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    tokens = [c.token_ids for c in llm.generate(PROMPTS, params)]
    graphs = llm.engine.loaded.runner.graphs is not None
    del llm
    gc.collect()
    torch.cuda.empty_cache()
    return tokens, graphs


def check(into: Path, out: Path) -> None:
    import torch

    # Triton first: the eager engines below launch kernels through its JIT, which a plan loaded
    # before them would otherwise have left out of this process (ir/host_triton.py).
    import triton  # noqa: F401

    built = {row["name"]: row for row in json.loads((into / "built.json").read_text())}
    rows = []
    for family in FAMILIES:
        ckpt = tiny_checkpoint(Path(f"/tmp/plan-carry/{family}"), family)
        native, _ = kiln_compile(
            ckpt, "--target", "auto", "--lowering", "plan", "--dtype", "float32"
        )
        carried, graphs = greedy(ckpt, artifact=str(into / built[family]["artifact"]))
        row = {
            "family": family,
            "built_on_gpu_host": built[family]["host_has_gpu"],
            "decode_under_graphs": graphs,
            "carried_equals_native_plan": carried == greedy(ckpt, artifact=native["artifact"])[0],
            "carried_equals_eager": carried == greedy(ckpt, compile="never")[0],
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {"card": torch.cuda.get_device_name(), "families": rows}
    out.write_text(json.dumps(result, indent=2))
    ok = all(r["carried_equals_native_plan"] and r["carried_equals_eager"] for r in rows)
    raise SystemExit(0 if ok else 1)


def compare_logits(ckpt: Path, carried: Path, native: Path, out: Path) -> None:
    """Logits of both artifacts on the same steps: worst relative error, cosine, and whether
    every row's argmax (the greedy token) agrees."""
    import torch

    from benchmarks.gpu_compile_check import compare, run_steps

    engine = dict(model=str(ckpt), max_model_len=4096, gpu_memory_utilization=0.4)
    got = run_steps(engine | dict(artifact=str(carried)))
    want = run_steps(engine | dict(artifact=str(native)))
    result = compare(got, want)
    result["argmax_agree"] = [int(g.argmax()) == int(w.argmax()) for g, w in zip(got, want)]
    result["card"] = torch.cuda.get_device_name()
    print(json.dumps(result), flush=True)
    out.write_text(json.dumps(result, indent=2))


def main() -> None:
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("into", type=Path)
    b.add_argument("--target", default="h200")
    b.add_argument("--shapes", nargs="*", default=[])
    c = sub.add_parser("check")
    c.add_argument("into", type=Path)
    c.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("compare")
    m.add_argument("checkpoint", type=Path)
    m.add_argument("carried", type=Path)
    m.add_argument("native", type=Path)
    m.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "build":
        build(args.into.resolve(), args.target, args.shapes)
    elif args.cmd == "check":
        check(args.into.resolve(), args.out)
    else:
        compare_logits(args.checkpoint, args.carried, args.native, args.out)


if __name__ == "__main__":
    main()
