"""Lowering the post-pass graph for a target: native (AOTInductor, CPU or own GPU) or cross
GPU (Triton cubins for an arch the host lacks)."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import torch

from kiln.errors import KilnError

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


def lower(passed, model, target, staging: Path, options, progress=None) -> dict:
    from safetensors.torch import save_file

    from lowering.progress import as_progress

    progress = as_progress(progress or (lambda message: None))
    import ir.kernels  # noqa: F401  (registers kernel implementations)
    from ir.registry import choose

    plan, derived = weight_plan(passed, model)
    if derived:
        save_file(derived, str(staging / "derived.safetensors"))
    ops = ir_ops_in(passed.gm)
    impls = {op: choose(op, target).chosen.provider for op in sorted(ops)}
    (staging / "graph.txt").write_text(passed.gm.code)
    manifest = {
        "weights": plan,
        "inputs": [n.target for n in passed.gm.graph.find_nodes(op="placeholder")],
        "vocab_size": passed.vocab_size,
        "ir_ops": dict(ops),
        "impls": impls,
    }
    if options.lowering == "piecewise" and _aoti_lowering(target):
        from lowering.piecewise import lower_piecewise

        manifest.update(
            lower_piecewise(passed, staging, options, _runnable(impls, target), progress)
        )
        return {"impls": impls, "manifest": manifest}
    with progress.pieces(1, "compile the whole graph") as tick:
        start = time.perf_counter()
        if target.device_type == "cpu":
            manifest.update(_lower_aoti(passed, staging, options, impls))
        elif torch.cuda.is_available() and _host_matches(target):
            manifest.update(_lower_native_gpu(passed, staging, options, impls))
        else:
            manifest.update(_lower_cross(ops, impls, target, staging))
        tick(manifest["lowering"], time.perf_counter() - start)
    return {"impls": impls, "manifest": manifest}


def _aoti_lowering(target) -> bool:
    """Whether this host lowers `target` through AOTInductor (the CPU, or its own GPU)."""
    if target.device_type == "cpu":
        return True
    native = torch.cuda.is_available() and _host_matches(target)
    return native and gpu_lowering() == "aoti"


def _runnable(impls: dict[str, str], target) -> dict[str, str]:
    """`impls` with every provider that cannot run at serve time replaced by its reference:
    on a GPU only Triton kernels stay calls (no Helion on the serve path)."""
    if target.device_type == "cpu":
        return dict(impls)
    return {op: p if p == "triton" else "reference" for op, p in impls.items()}


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
    dims = _dynamic_dims(Dim, options.max_num_tokens)
    args, dynamic = [], []
    for name in names:
        if name in passed.weights:
            args.append(passed.weights[name])
            dynamic.append(None)
        else:
            args.append(_example_input(name, EXAMPLE_T, passed))
            key = "kv_caches" if name.startswith("kv_caches_") else name
            dynamic.append(dims.get(key))
    return export(Graph(passed.gm), tuple(args), dynamic_shapes=(tuple(dynamic),), strict=False)


# Example step for tracing: 7 tokens of 2 sequences over a cache of 3 blocks of 5 slots. Every
# size is >= 2 and distinct, so none is specialised or mistaken for another.
EXAMPLE_T, EXAMPLE_SEQS, EXAMPLE_BLOCKS, EXAMPLE_BLOCK_SIZE, EXAMPLE_TABLE_WIDTH = 7, 2, 3, 5, 4


def _dynamic_dims(Dim, max_num_tokens: int) -> dict:
    """Only the step's sizes vary: tokens T, sequences B (B + 1 offsets), block-table width,
    and the KV cache's block count and block size. Weights and head sizes stay static."""
    t = Dim("T", min=1, max=max_num_tokens)
    b = Dim("B", min=1, max=4096)
    width, blocks, block_size = Dim("W", min=1), Dim("NB", min=1), Dim("BS", min=1, max=1024)
    per_token = {0: t}
    return {
        "input_ids": per_token,
        "positions": per_token,
        "attn_slot_mapping": per_token,
        "attn_block_tables": {0: b, 1: width},
        "attn_seq_lens": {0: b},
        "attn_query_start_loc": {0: b + 1},
        "kv_caches": {0: blocks, 1: block_size},
    }


def _example_input(name: str, t: int, passed, seqs: int = EXAMPLE_SEQS):
    meta = next(n for n in passed.gm.graph.find_nodes(op="placeholder") if n.target == name)
    val = meta.meta["val"]
    device = next(iter(passed.weights.values())).device
    first = t if seqs == 1 else t // 2 + 1  # first sequence's query tokens; the second: the rest
    i32 = dict(dtype=torch.int32, device=device)
    if name in ("input_ids", "positions"):
        return torch.arange(t, device=device) % 3
    if name == "attn_slot_mapping":
        return torch.arange(t, device=device) % (EXAMPLE_BLOCKS * EXAMPLE_BLOCK_SIZE)
    if name == "attn_block_tables":
        table = torch.arange(seqs * EXAMPLE_TABLE_WIDTH, **i32) % EXAMPLE_BLOCKS
        return table.reshape(seqs, EXAMPLE_TABLE_WIDTH)
    if name == "attn_seq_lens":  # a single-token step decodes a sequence with history
        return torch.tensor([first, t - first][:seqs], **i32) + int(t == 1)
    if name == "attn_query_start_loc":
        return torch.tensor([0, first, t][: seqs + 1], **i32)
    if name.startswith("kv_caches_"):
        shape = [EXAMPLE_BLOCKS, EXAMPLE_BLOCK_SIZE, *[int(s) for s in val.shape[2:]]]
        return torch.zeros(shape, dtype=val.dtype, device=device)
    raise KilnError(f"lowering does not know how to build example input {name!r}")


# IR ops whose chosen implementation is their plain-torch reference are inlined before
# Inductor, so it generates (and fuses) code for them instead of calling back into Python.
# Ops that write the KV cache or read tensor values to decide shapes stay calls, unless their
# chosen kernel has an in-graph form (see `kernels_in_graph`).
NOT_INLINED = ("attention", "attention_quant", "all_reduce", "all_reduce_add_rms_norm")


def inline_references(ep, impls: dict[str, str]):
    """Decompose each inlinable IR op (chosen provider: reference) into its reference."""
    from ir.registry import get_op

    table = {
        get_op(op).overload: get_op(op).reference
        for op, provider in impls.items()
        if provider == "reference" and op not in NOT_INLINED
    }
    return ep.run_decompositions(table) if table else ep, sorted(o.name() for o in table)


@contextmanager
def kernels_in_graph(gm, impls: dict[str, str]):
    """While exporting: calls of ops whose chosen kernel has an in-graph form
    (`ir.registry.Impl.in_graph`, e.g. a Triton launch through `wrap_triton`) call that form,
    so export traces the launch itself and AOTInductor compiles the kernel into the package.
    `attention_quant` without a fused kernel becomes that attention, then its quant reference.
    (A mutating op cannot be decomposed after export: it is wrapped as auto_functionalized.)
    Yields the rewritten ops' names; the graph is restored afterwards."""
    from ir.ops.fused import attention_then_quant
    from ir.registry import get_op

    forms: dict = {}
    for op, provider in impls.items():
        impl = next((i for i in get_op(op).impls if i.provider == provider), None)
        if impl is not None and impl.in_graph is not None:
            forms[get_op(op).overload.overloadpacket] = impl.in_graph
    attention = forms.get(get_op("attention").overload.overloadpacket)
    if attention is not None and impls.get("attention_quant") == "reference":

        def attention_quant_in_graph(*args):
            return attention_then_quant(attention, *args)

        forms[get_op("attention_quant").overload.overloadpacket] = attention_quant_in_graph
    saved = {}
    for node in gm.graph.nodes:  # a call names the op (packet) or its overload
        packet = getattr(node.target, "overloadpacket", node.target)
        if node.op == "call_function" and packet in forms:
            saved[node] = node.target
            node.target = forms[packet]
    gm.recompile()
    try:
        yield sorted({getattr(t, "overloadpacket", t)._qualified_op_name for t in saved.values()})
    finally:
        for node, target in saved.items():
            node.target = target
        gm.recompile()


# The IR references are the spec, rounding included (e.g. silu_and_mul rounds silu's output to the
# activation dtype before the product). Inductor keeps fused intermediates in fp32 unless told to
# round where eager code would (CPU demo, bf16: compiled vs reference 0.0199 -> 0.0174).
INDUCTOR_OPTIONS = {"emulate_precision_casts": True}


def _lower_aoti(passed, staging: Path, options, runnable: dict[str, str]) -> dict:
    """AOTInductor: the post-pass graph (references inlined) compiled into a `.pt2` package
    that a warm start loads through the C++ loader. `runnable` is `impls` with every provider
    that cannot run at serve time replaced by its reference."""
    from torch._inductor import aoti_compile_and_package, config

    from compile_cache.tool_caches import default_root
    from lowering.aoti_headers import regex_free_aoti_runtime

    with kernels_in_graph(passed.gm, runnable) as in_graph:
        ep, inlined = inline_references(_export(passed, options), runnable)
    inlined = sorted(inlined + in_graph)
    with config.patch(INDUCTOR_OPTIONS), regex_free_aoti_runtime(default_root()):
        aoti_compile_and_package(ep, package_path=str(staging / "model.pt2"))
    calls = sorted(op for op in runnable if f"kiln::{op}" not in inlined)
    kernels = {runnable[op] for op in runnable if runnable[op] != "reference" or op in calls}
    return {
        "lowering": "aoti",
        "package": "model.pt2",
        "inlined_ops": inlined,
        "calls": calls,  # IR ops the package still calls through the dispatcher
        "kernels": {"inductor": 1, **{p: 1 for p in sorted(kernels)}},
    }


def _lower_native_gpu(passed, staging: Path, options, impls: dict[str, str]) -> dict:
    """GPU host, own target: AOTInductor, as on the CPU, with the chosen Triton kernels called
    from the package. Helion kernels cannot run at serve time (no Helion on the serve path):
    their ops are inlined as references and Inductor generates fused Triton code for them.

    `KILN_GPU_LOWERING=jit` selects the fallback instead: the exported program saved and run
    under torch.compile at load (its code in Kiln's Inductor cache; slow to load, Dynamo
    traces it again), for a host whose AOTInductor packages cannot load."""
    runnable = {op: p if p == "triton" else "reference" for op, p in impls.items()}
    if gpu_lowering() == "aoti":
        return _lower_aoti(passed, staging, options, runnable)
    from runtime.artifact import jit_program

    # The fallback keeps attention a call into the bound Triton kernel, as it was validated
    # (a saved program holding Triton launch nodes is not something it was ever run with).
    ep, inlined = inline_references(_export(passed, options), runnable)
    torch.export.save(ep, str(staging / "program.pt2"))
    names = [p.target for p in passed.gm.graph.find_nodes(op="placeholder")]
    program = jit_program(ep, names)
    for t, seqs in ((EXAMPLE_T, EXAMPLE_SEQS), (1, 1), (EXAMPLE_T, 1)):
        example = [
            passed.weights[n] if n in passed.weights else _example_input(n, t, passed, seqs)
            for n in names
        ]
        program(*example)  # Dynamo specialises sizes 0/1: fill the cache for each variant
    torch.cuda.synchronize()
    return {
        "lowering": "inductor_jit",
        "program": "program.pt2",
        "inlined_ops": inlined,
        "kernels": {"inductor": 1, **{p: 1 for p in set(runnable.values()) if p != "reference"}},
    }


GPU_LOWERING_ENV = "KILN_GPU_LOWERING"
GPU_LOWERINGS = ("aoti", "jit")


def gpu_lowering() -> str:
    """The GPU-native lowering in effect: `aoti` unless KILN_GPU_LOWERING says `jit`."""
    import os

    value = os.environ.get(GPU_LOWERING_ENV, "aoti")
    if value not in GPU_LOWERINGS:
        raise KilnError(f"{GPU_LOWERING_ENV}={value!r}: choose one of {', '.join(GPU_LOWERINGS)}")
    return value


def _lower_cross(ops: Counter, impls: dict, target, staging: Path) -> dict:
    from ir.kernels.base import all_kernels
    from lowering.cross import compile_kernel, write_kernels

    specs = {s.name: s for s in all_kernels()}
    compiled, providers = [], Counter()
    for op, provider in impls.items():
        if provider in ("helion", "triton") and op in specs:
            for variant in specs[op].variants:
                compiled.extend(compile_kernel(specs[op], target, variant))
            providers[provider] += 1
        else:
            providers["library" if op == "scaled_mm" else provider] += 1
    write_kernels(compiled, staging / "kernels")
    return {
        "lowering": "cross",
        "kernels": dict(providers),
        "cubins": sorted(f"kernels/{k.name}.cubin" for k in compiled),
        "arch": target.arch,
    }
