"""`kiln compile` end to end on the CPU host: native, cross, cache behaviour, warm load path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # each compile runs Inductor or ptxas: tens of seconds

ROOT = Path(__file__).resolve().parents[2]


def kiln(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kiln", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=900,
    )


def artifact_path(out: str) -> Path:
    line = next(x for x in out.splitlines() if x.startswith("artifact "))
    return Path(line.split()[1])


def key_of(out: str) -> str:
    return next(x for x in out.splitlines() if x.startswith("key ")).split()[1]


@pytest.fixture(scope="module")
def cpu_compile():
    proc = kiln("compile", "demo", "--target", "cpu", "--no-record")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_compile_cpu_then_generate_hits_and_matches_reference(cpu_compile):
    assert cpu_compile.stdout.startswith("compiled: demo for cpu (aoti_piecewise)")
    again = kiln("compile", "demo", "--target", "cpu", "--no-record")
    assert again.returncode == 0 and again.stdout.startswith("cache hit")
    args = [
        "generate",
        "demo",
        "--prompt",
        "héllo ✓",
        "--prompt",
        "a longer second prompt",
        "--max-tokens",
        "12",
        "--json",
    ]
    compiled, reference = kiln(*args), kiln(*args, "--compile", "never")
    assert "running compiled artifact" in compiled.stderr, compiled.stderr[-2000:]
    assert "eager reference" in reference.stderr
    got = [json.loads(line) for line in compiled.stdout.splitlines()]
    ref = [json.loads(line) for line in reference.stdout.splitlines()]
    assert len(got) == len(ref) == 2
    for g, r in zip(got, ref):
        assert g["prompt_token_ids"] == r["prompt_token_ids"]
        assert_same_greedy_tokens(r["prompt_token_ids"], r["token_ids"], g["token_ids"])


def assert_same_greedy_tokens(prompt, ref_tokens, got_tokens):
    """Equal, or the first difference is a numerical tie in the reference (the random demo
    model has top-2 logit gaps near 1e-3, below fp32 reassociation noise of fused code)."""
    if got_tokens == ref_tokens:
        return
    from kiln.llm import LLM
    from runtime.sampling_params import SamplingParams

    i = next(j for j, (a, b) in enumerate(zip(ref_tokens, got_tokens)) if a != b)
    params = SamplingParams(max_tokens=i + 1, temperature=0, ignore_eos=True, logprobs=5)
    step = LLM("demo", compile="never").generate([prompt], params)[0].logprobs[i]
    top = dict(step.top)
    assert got_tokens[i] in top, (i, ref_tokens, got_tokens)
    assert top[ref_tokens[i]] - top[got_tokens[i]] < 1e-3, (i, top)


def test_package_loads_without_std_regex(cpu_compile):
    """AOTInductor's own device-string parser builds a std::regex, which crashes on load with the
    GPU image's torch; Kiln compiles against patched headers, so no regex code is in the package."""
    import zipfile

    packages = sorted(artifact_path(cpu_compile.stdout).rglob("*.pt2"))
    assert packages
    for package in packages:
        with zipfile.ZipFile(package) as z:
            libs = [z.read(n) for n in z.namelist() if n.endswith(".so")]
        assert libs and not any(b"regex_traits" in lib for lib in libs)


def test_compiled_logits_within_1e4_of_reference(cpu_compile):
    from kiln.llm import LLM
    from model_defs.step_inputs import StepSeq

    batch = [StepSeq(list(range(3, 40)), 0, [0, 1, 2], True), StepSeq([5, 6, 7], 0, [3], True)]
    # The reference first: loading an artifact binds its chosen kernels for the process.
    ref = LLM("demo", compile="never").engine.loaded.runner.execute(batch)
    compiled = LLM("demo")
    assert compiled.engine.loaded.artifact_key is not None
    got = compiled.engine.loaded.runner.execute(batch)
    assert ((got - ref).abs().max() / ref.abs().max()).item() <= 1e-4
    # A package that calls no IR op compiles nothing per shape: CUDA graphs on a GPU would
    # warm up only their first bucket (see CUDAGraphRunner).
    forward = compiled.engine.loaded.runner.forward
    man = json.loads((artifact_path(cpu_compile.stdout) / "manifest.json").read_text())
    assert forward.compiles_per_shape == bool(man["calls"])


def test_warm_load_path_imports_no_compiler(cpu_compile):
    code = (
        "import sys, json; from kiln.llm import LLM; from runtime.sampling_params import "
        "SamplingParams as S; llm = LLM('demo'); assert llm.engine.loaded.artifact_key; "
        "llm.generate(['hi'], S(max_tokens=2)); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('helion', 'passes', 'sympy') or "
        "m.startswith(('transformers.models', 'torch._inductor', 'torch._dynamo'))]; "
        "print(json.dumps(bad))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_serve_loads_the_cached_artifact(cpu_compile):
    import time

    from tests.server.harness import ServeProcess  # noqa: PLC0415

    server = ServeProcess("--compile", "on_miss").start()
    try:
        deadline = time.monotonic() + 20  # stderr is pumped by its own thread
        while not any("running compiled artifact" in x for x in server.stderr + server.stdout):
            assert time.monotonic() < deadline, server.stderr_text()[-2000:]
            time.sleep(0.1)
    finally:
        server.stop()


@pytest.mark.parametrize("target, arch", [("b200", "sm_100a"), ("h100", "sm_90a")])
def test_plan_compile_on_cpu_host_has_target_cubins(target, arch):
    from lowering.cubin import cubin_arch

    proc = kiln("compile", "demo", "--target", target, "--no-record")
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = artifact_path(proc.stdout)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["lowering"] == "plan" and manifest["cubins"]
    for rel in manifest["cubins"]:
        assert cubin_arch((path / rel).read_bytes()) == arch, rel
    if not torch.cuda.is_available():  # loading a GPU artifact here fails, naming both sides
        from kiln.errors import KilnError
        from runtime.loaders import host_check

        with pytest.raises(KilnError, match=f"targets {target}.*no GPU"):
            host_check(manifest)


def test_corrupt_artifact_is_detected_and_rebuilt():
    first = kiln("compile", "demo", "--target", "b200", "--no-record")
    path = artifact_path(first.stdout)
    cubin = next((path / "kernels").glob("*.cubin"))
    data = bytearray(cubin.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cubin.write_bytes(bytes(data))
    rebuilt = kiln("compile", "demo", "--target", "b200", "--no-record")
    assert rebuilt.returncode == 0
    assert cubin.name in rebuilt.stderr and "rebuild" in rebuilt.stderr
    assert rebuilt.stdout.startswith("compiled:")
    graph = path / "graph.txt"
    graph.write_bytes(graph.read_bytes()[:10])  # truncated
    again = kiln("compile", "demo", "--target", "b200", "--no-record")
    assert "graph.txt" in again.stderr and again.stdout.startswith("compiled:")


def test_concurrent_compiles_of_one_key_build_once():
    args = [
        sys.executable,
        "-m",
        "kiln",
        "compile",
        "demo",
        "--target",
        "h200",
        "--no-record",
        "--passes",
        "none",
    ]
    procs = [
        subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for _, e in outs]
    firsts = sorted(o.splitlines()[0].split(":")[0] for o, _ in outs)
    assert firsts == ["cache hit", "compiled"]
    assert key_of(outs[0][0]) == key_of(outs[1][0])


def test_key_factors_change_and_explain_names_them(cpu_compile, monkeypatch):
    from ir.targets import get_target
    from lowering.compile import CompileOptions, lookup_key
    from model_defs.registry import resolve_model_path

    path, cpu = resolve_model_path("demo"), get_target("cpu")
    base = lookup_key(CompileOptions(target="cpu"), path, cpu)[0]
    variants = {
        "passes": lookup_key(CompileOptions(target="cpu", passes="none"), path, cpu)[0],
        "dtype": lookup_key(CompileOptions(target="cpu", dtype="bfloat16"), path, cpu)[0],
        "quantization": lookup_key(CompileOptions(target="cpu", quantization="fp8"), path, cpu)[0],
        "target": lookup_key(CompileOptions(target="h100"), path, get_target("h100"))[0],
    }
    assert len({base, *variants.values()}) == 5
    import compile_cache

    real = compile_cache.installed_versions
    monkeypatch.setattr(
        compile_cache, "installed_versions", lambda *a, **k: {**real(), "torch": "0.0.0-other"}
    )
    assert lookup_key(CompileOptions(target="cpu"), path, cpu)[0] != base
    monkeypatch.undo()
    other = kiln("compile", "demo", "--target", "cpu", "--passes", "none", "--no-record")
    assert "cache miss; closest entry" in other.stderr and "pass_toggles" in other.stderr
    explain = kiln("cache", "explain", key_of(cpu_compile.stdout), "--vs", key_of(other.stdout))
    assert explain.returncode == 0 and "pass_toggles" in explain.stdout
