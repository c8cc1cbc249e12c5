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


def test_kernel_implementations_keep_their_body_for_a_caller_to_bind():
    """Every Triton and Helion implementation registers its raw body; binding a launcher
    (Triton) or runner (Helion) of one's own routes its launches there."""
    load_kernels()
    for op in ("attention", "rms_norm"):
        impl = next(i for i in get_op(op).impls if i.provider in ("triton", "helion"))
        assert impl.body is not None
        assert impl.body_takes == ("launcher" if impl.provider == "triton" else "runner")
    seen = []

    def runner(fn, config, x2d, weight, eps):
        seen.append((fn.__name__, tuple(x2d.shape), eps))
        return x2d

    rms = next(i for i in get_op("rms_norm").impls if i.provider == "helion")
    x = torch.randn(3, 5, 8)
    assert rms.with_launcher(runner)(x, torch.ones(8), 1e-6).shape == x.shape
    assert seen == [("rms_norm_kernel", (15, 8), 1e-6)]


def test_a_body_whose_parameters_differ_from_the_reference_is_refused():
    import pytest

    from ir.registry import register_impl

    def body(launcher, x, eps):  # rms_norm takes (x, weight, eps)
        return x

    with pytest.raises(TypeError, match="body of kiln.rms_norm must take"):
        register_impl(
            "rms_norm", "triton", lambda t: "test only", body=body, body_takes="launcher"
        )(lambda x, weight, eps: x)
