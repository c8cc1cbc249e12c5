"""`kiln compile demo --target h100 --json` on the CPU host: the artifact's per-op table lists
the fused and Helion kernels, and every kernel it names is in the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lowering.test_compile_e2e import kiln

pytestmark = pytest.mark.slow  # a plan compile runs ptxas for every kernel: ~20 s


@pytest.fixture(scope="module")
def fp8_h100():
    proc = kiln("compile", "demo", "--target", "h100", "--quantization", "fp8", "--json",
                "--no-record")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_table_lists_fused_helion_and_triton_kernels(fp8_h100):
    rows = {r["op"]: r for r in fp8_h100["manifest"]["ops"]}
    expected = {
        "fused_add_rms_norm_quant": "helion",
        "silu_and_mul_quant": "helion",
        "rms_norm_quant": "helion",
        "rotary_embedding": "helion",
        "attention_quant": "triton",
        "scaled_mm": "triton",  # its small-M kernel; torch._scaled_mm above max_m
    }
    for op, provider in expected.items():
        assert rows[op]["implementation"] == provider and rows[op]["kernels"], rows[op]
        assert rows[op]["count"] >= 1
    assert not [r for r in rows.values() if r["implementation"] == "reference"]


def test_every_named_kernel_is_in_the_artifact(fp8_h100):
    path = Path(fp8_h100["artifact"])
    for row in fp8_h100["manifest"]["ops"]:
        if row["runs"] == "cubin":
            for name in row["kernels"]:
                assert (path / "kernels" / f"{name}.cubin").is_file(), name
