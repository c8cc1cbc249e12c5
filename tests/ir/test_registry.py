"""The registries drive binding and CUDA-graph routing; the runtime names no kernel or op."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from ir.registry import bind_for, capturable_impl, capture_routes, get_op, load_kernels

ROOT = Path(__file__).resolve().parents[2]


def _impl(op: str, provider: str):
    load_kernels()
    return next(i for i in get_op(op).impls if i.provider == provider)


def test_a_registered_gpu_kernel_binds_from_an_artifacts_choices():
    """What `runtime/loaders/compiled.py` does with a manifest: no kernel is named anywhere."""
    bound = bind_for("cuda", {"rope_attention": "triton", "rms_norm": "helion"})
    assert bound == {"rope_attention": "triton"}  # helion never runs at serve time


def test_capture_routes_come_from_the_registry():
    routes = capture_routes(lambda reference: ("reentered", reference))
    kiln = torch.ops.kiln
    assert routes[kiln.attention.default] is _impl("attention", "triton").fn
    assert routes[kiln.rope_attention.default] is _impl("rope_attention", "triton").fn
    assert routes[kiln.attention_quant.default] is _impl("attention_quant", "triton").fn
    # stays a call (talks to other ranks) with no capturable kernel: its reference, re-entered
    assert routes[kiln.all_reduce_add_rms_norm.default] == (
        "reentered",
        get_op("all_reduce_add_rms_norm").reference,
    )
    assert kiln.rms_norm.default not in routes  # runs as bound: its reference never syncs
    assert not _impl("attention", "reference").capturable  # its reference syncs the host
    assert capturable_impl("attention").provider == "triton"


def test_runtime_imports_no_kernel_and_names_no_ir_op():
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("ir.kernels"), (
                    f"{path.name}: {node.module}"
                )
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("ir.kernels"), f"{path.name}: {alias.name}"
        assert "ops.kiln" not in path.read_text(), f"{path.name} names IR ops: use ir.registry"
