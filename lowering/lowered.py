"""Lowering the post-pass graph for a target: native (AOTInductor, CPU or own GPU) or a plan
(cubins for the target arch and an execution plan; any host, a GPU it lacks included)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from compile_cache.formats import AOTI, INDUCTOR_JIT, INDUCTOR_OPTIONS, jit_program
from kiln import env
from lowering.export import (
    EXAMPLE_SEQS,
    EXAMPLE_T,
    dynamic_dims,
    example_input,
    inline_references,
    kernels_in_graph,
)

USER_INPUTS_DYNAMIC_T = ("input_ids", "positions", "attn_slot_mapping")


def weight_plan(passed, model) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Each graph weight is a model parameter (by name) or a pass-derived tensor (stored)."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    plan, derived = {}, {}
    for name, tensor in passed.weights.items():
        if id(tensor) in by_id:
            plan[name] = by_id[id(tensor)]
        else:
            derived[name] = tensor.detach().contiguous().cpu()
    head = passed.lm_head
    if id(head) in by_id:
        plan["__lm_head__"] = by_id[id(head)]
    else:
        derived["__lm_head__"] = head.detach().contiguous().cpu()
    return plan, derived


def ir_ops_in(gm) -> Counter:
    counts = Counter()
    for node in gm.graph.nodes:
        if node.op == "call_function" and str(node.target).startswith("kiln."):
            counts[str(node.target).split(".")[1]] += 1
    return counts


@contextmanager
def head_start(options, target) -> Iterator[object | None]:
    """What the lowering starts before the capture, so it runs beside it: for a plan, the
    process that imports Helion and generates its kernels' sources
    (`lowering/helion_sources.py`); else nothing. Yields what `lower` takes as `ahead`."""
    from lowering.helion_sources import SourceWorker, take, worth_a_worker

    early = take()
    if not (plan_lowering(options, target) and worth_a_worker()):
        if early is not None:
            early.close()
        yield None
        return
    with early or SourceWorker() as worker:
        yield worker


def lower(passed, model, target, staging: Path, options, progress=None, ahead=None) -> dict:
    """Lower the post-pass graph into `staging`; returns {"impls", "manifest"}. `ahead` is
    what `head_start` started."""
    from safetensors.torch import save_file

    from lowering.progress import as_progress

    progress = as_progress(progress or (lambda message: None))
    import ir.kernels  # noqa: F401  (registers kernel implementations)
    from lowering.op_table import runnable_impls

    plan, derived = weight_plan(passed, model)
    if derived:
        save_file(derived, str(staging / "derived.safetensors"))
    ops = ir_ops_in(passed.gm)
    impls, why = runnable_impls(ops, target)
    (staging / "graph.txt").write_text(passed.gm.code)
    manifest = {
        "weights": plan,
        "inputs": [n.target for n in passed.gm.graph.find_nodes(op="placeholder")],
        "vocab_size": passed.vocab_size,
        "ir_ops": dict(ops),
        "impls": impls,
    }
    if plan_lowering(options, target):
        from lowering.plan_artifact import lower_plan

        manifest.update(lower_plan(passed, target, staging, impls, ops, progress, ahead))
        return {"impls": impls, "manifest": manifest}
    if options.lowering in ("auto", "piecewise") and _aoti_lowering(target):
        from lowering.piecewise import lower_piecewise

        manifest.update(lower_piecewise(passed, staging, options, impls, ops, why, progress))
        return {"impls": impls, "manifest": manifest}
    with progress.pieces(1, "compile the whole graph") as tick:
        start = time.perf_counter()
        if target.device_type == "cpu":
            manifest.update(_lower_aoti(passed, staging, options, impls, ops, why))
        else:
            manifest.update(_lower_native_gpu(passed, staging, options, impls, ops, why))
        tick(manifest["lowering"], time.perf_counter() - start)
    return {"impls": impls, "manifest": manifest}


def plan_lowering(options, target) -> bool:
    """Whether this compile builds a plan artifact: asked for (`--lowering plan`), the default
    for a GPU target (`auto`), or a GPU target this host lacks (the only lowering that can build
    for it)."""
    if options.lowering == "plan" or (options.lowering == "auto" and target.is_cuda):
        return True
    return target.is_cuda and not (torch.cuda.is_available() and _host_matches(target))


def _aoti_lowering(target) -> bool:
    """Whether this host lowers `target` through AOTInductor (the CPU, or its own GPU)."""
    if target.device_type == "cpu":
        return True
    native = torch.cuda.is_available() and _host_matches(target)
    return native and env.gpu_lowering() == "aoti"


def _host_matches(target) -> bool:
    major, minor = torch.cuda.get_device_capability()
    return target.compute_capability == (major, minor)


def _export(passed, options):
    from torch.export import Dim, export

    class Graph(torch.nn.Module):
        def __init__(self, gm):
            super().__init__()
            self.gm = gm

        def forward(self, *args):
            return self.gm(*args)

    names = [n.target for n in passed.gm.graph.find_nodes(op="placeholder")]
    dims = dynamic_dims(Dim, options.max_num_tokens)
    args, dynamic = [], []
    for name in names:
        if name in passed.weights:
            args.append(passed.weights[name])
            dynamic.append(None)
        else:
            args.append(example_input(name, EXAMPLE_T, passed))
            key = "kv_caches" if name.startswith("kv_caches_") else name
            dynamic.append(dims.get(key))
    return export(Graph(passed.gm), tuple(args), dynamic_shapes=(tuple(dynamic),), strict=False)


def _lower_aoti(passed, staging: Path, options, runnable: dict[str, str], ops, why) -> dict:
    """AOTInductor: the post-pass graph (references inlined) compiled into a `.pt2` package
    that a warm start loads through the C++ loader. `runnable` is `impls` with every provider
    that cannot run at serve time replaced by its reference; `why` says why, per such op."""
    from torch._inductor import aoti_compile_and_package, config

    from compile_cache.tool_caches import default_root
    from lowering.aoti_headers import regex_free_aoti_runtime
    from lowering.op_table import kernel_counts, op_table
    from lowering.package_calls import package_calls

    launches: dict = {}
    with kernels_in_graph(passed.gm, runnable, launches) as in_graph:
        ep, inlined = inline_references(_export(passed, options), runnable)
    inlined = sorted(inlined + in_graph)
    with config.patch(INDUCTOR_OPTIONS), regex_free_aoti_runtime(default_root()):
        aoti_compile_and_package(ep, package_path=str(staging / "model.pt2"))
    # Read from the package itself, so the manifest cannot disagree with what it calls.
    calls = sorted(package_calls(staging / "model.pt2"))
    rows = op_table(ops, runnable, launches, calls, why)
    return {
        "lowering": AOTI,
        "package": "model.pt2",
        "inlined_ops": inlined,
        "calls": calls,  # IR ops the package still calls through the dispatcher
        "ops": rows,
        "kernels": kernel_counts(rows),
    }


def _lower_native_gpu(passed, staging: Path, options, impls: dict[str, str], ops, why) -> dict:
    """GPU host, own target: AOTInductor, as on the CPU. `impls` keeps a kernel only where it
    has an in-graph form (`lowering.op_table.runnable_impls`): its launches (Helion's
    generated Triton, hand-written Triton, `torch._scaled_mm`) are traced into the package,
    so the serve path imports neither Helion nor the kernel files.

    `KILN_GPU_LOWERING=jit` selects the fallback instead: the exported program saved and run
    under torch.compile at load (its code in Kiln's Inductor cache; slow to load, Dynamo
    traces it again), for a host whose AOTInductor packages cannot load."""
    if env.gpu_lowering() == "aoti":
        return _lower_aoti(passed, staging, options, impls, ops, why)
    # The fallback runs IR ops as dispatcher calls, where only Triton kernels are bound: the
    # saved program holds no Triton launch nodes, so loading it needs only the dispatcher.
    runnable = {op: p if p == "triton" else "reference" for op, p in impls.items()}
    ep, inlined = inline_references(_export(passed, options), runnable)
    torch.export.save(ep, str(staging / "program.pt2"))
    names = [p.target for p in passed.gm.graph.find_nodes(op="placeholder")]
    program = jit_program(ep, names)
    for t, seqs in ((EXAMPLE_T, EXAMPLE_SEQS), (1, 1), (EXAMPLE_T, 1)):
        example = [
            passed.weights[n] if n in passed.weights else example_input(n, t, passed, seqs)
            for n in names
        ]
        program(*example)  # Dynamo specialises sizes 0/1: fill the cache for each variant
    torch.cuda.synchronize()
    return {
        "lowering": INDUCTOR_JIT,
        "impls": runnable,
        "program": "program.pt2",
        "inlined_ops": inlined,
        "kernels": {"inductor": 1, **{p: 1 for p in set(runnable.values()) if p != "reference"}},
    }
