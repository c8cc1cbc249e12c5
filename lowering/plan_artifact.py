"""Writing a `plan` artifact: plan.json, the cubins of every kernel it launches, its op table.

The lowering for a GPU target the host lacks (this is how `kiln compile --target b200` builds
on a CPU box), and `--lowering plan` on the target's own GPU. The same post-pass graph as a
native build; every kernel compiled for the target arch at the model's shapes (token count a
runtime argument); GEMMs stay library calls (cuBLAS picks its kernel on the target).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from compile_cache.formats import PLAN
from kiln import env
from kiln.config import EngineConfig
from kiln.errors import KilnError
from lowering.package_calls import check_plan
from lowering.plan import Recording, build_plan
from lowering.plan_kernels import CubinPool, write_cubins

PLAN_FILE = "plan.json"
KERNELS_DIR = "kernels"


def lower_plan(
    passed, target, staging: Path, impls: dict[str, str], ops: Counter, progress, sources=None
) -> dict:
    """Build the plan, compile its kernels into `staging`, return the manifest's fields.

    Two walks over the graph: a look-ahead one that waits for nothing (Helion kernels'
    sources only asked for, from `sources`, a `lowering.helion_sources.SourceWorker`) and
    starts every Triton kernel's cubins; then the plan's own, which runs each Helion kernel
    from its source (the worker's answer, or generated here without a worker) and starts its
    cubins as it records them."""
    import triton

    if not target.is_cuda:
        raise KilnError(
            f"--lowering plan runs cubins and needs a GPU target, not {target.name!r}; "
            "use --lowering piecewise for the CPU"
        )
    _refuse_host_syncing_references(impls, target)
    threads = env.kernel_threads()
    block = EngineConfig.block_size
    request, plain_source = (sources.request, sources.plain_source) if sources else (None, None)
    with CubinPool(target, threads) as pool:
        ahead = Recording(pool.prefetch, look_ahead=True, request=request)
        build_plan(passed, impls, target, block, recording=ahead)
        recording = Recording(pool.add, plain_source)
        build = build_plan(passed, impls, target, block, recording=recording)
        label = f"compile {len(pool.jobs)} distinct cubins for {target.arch} ({threads} at once)"
        with progress.pieces(len(pool.jobs), label) as tick:
            cubins = pool.cubins(tick)
    per_launch = pool.per_launch
    for entry in build.plan["entries"]:
        if entry["kind"] == "kernel":
            entry["kernels"] = sorted(
                {ids[0] for ids in (per_launch[i] for i in entry["launches"])}
            )
            entry["launches"] = [per_launch[i] for i in entry["launches"]]
    paths = write_cubins(cubins, build.sources, staging / KERNELS_DIR)
    (staging / PLAN_FILE).write_text(json.dumps(build.plan, indent=1))
    rows = plan_op_table(build.plan, ops)
    counts = Counter(r["implementation"] for r in rows if r["runs"] == "cubin")
    manifest = {
        "lowering": PLAN,
        "plan_file": PLAN_FILE,
        "ops": rows,
        "library_calls": library_calls(build.plan),
        "kernels": {p: counts[p] for p in sorted(counts)},
        "cubins": paths,
        "arch": target.arch,
        "triton": {"version": triton.__version__, "scratch_params": _scratch_abi(cubins)},
    }
    check_plan(staging, manifest)  # the table names only what the artifact contains
    return manifest


def _refuse_host_syncing_references(impls: dict[str, str], target) -> None:
    """A GPU plan runs under CUDA graphs: an op whose reference reads device tensors on the
    host must have a kernel there."""
    from ir.registry import get_op

    for op, provider in sorted(impls.items()):
        if provider == "reference" and get_op(op).syncs_host:
            raise KilnError(
                f"kiln.{op} has no kernel for {target.name} and its reference reads device "
                "tensors on the host, which a CUDA graph cannot capture; register a kernel "
                f"for it (docs/writing-a-kernel.md) or compile with --lowering piecewise"
            )


def plan_op_table(plan: dict, ops: Counter) -> list[dict]:
    """One row per IR op: count, the implementation that runs, its cubins, how it runs."""
    rows: dict[str, dict] = {}
    for e in plan["entries"]:
        if "op" not in e:
            continue
        row = rows.setdefault(e["op"], {"op": e["op"], "count": 0, "implementation": e["provider"],
                                        "kernels": [], "runs": _RUNS[e["kind"]]})  # fmt: skip
        row["count"] += 1
        if e["kind"] == "kernel":
            row["kernels"] = sorted(set(row["kernels"]) | set(e["kernels"]))
        elif e["kind"] == "library":
            row["kernels"] = [f"{e['op']} ({e['provider']})"]
    assert {op: r["count"] for op, r in rows.items()} == dict(ops), "plan and graph disagree"
    return [rows[op] for op in sorted(rows)]


_RUNS = {"kernel": "cubin", "library": "library call", "reference": "reference"}


def library_calls(plan: dict) -> dict[str, int]:
    """{aten op: calls} the plan leaves to libraries (GEMMs: cuBLAS picks on the target)."""
    counts = Counter(
        e["target"] for e in plan["entries"] if e["kind"] == "library" and "op" not in e
    )
    return dict(sorted(counts.items()))


def _scratch_abi(cubins) -> list[str]:
    """The scratch pointers the build's Triton appends to every kernel's parameters."""
    kinds = {tuple(c.metadata["scratch_params"]) for c in cubins}
    if len(kinds) > 1:
        raise RuntimeError(f"cubins disagree on the appended scratch parameters: {kinds}")
    return list(kinds.pop()) if kinds else []
