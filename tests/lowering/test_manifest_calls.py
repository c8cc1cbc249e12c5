"""The manifest's `calls` are read from the package, and a manifest that disagrees fails."""

from __future__ import annotations

import json
import zipfile

import pytest

from kiln.errors import KilnError
from lowering.package_calls import check_manifest_calls, package_calls


def _package(path, targets: list[str]) -> None:
    """A package holding one wrapper.json with proxy-executor nodes calling `targets`."""
    nodes = [
        {"name": f"buf{i}", "node": {"target": t, "inputs": []}} for i, t in enumerate(targets)
    ]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "model/data/aotinductor/model/x.wrapper.json", json.dumps({"nodes": nodes})
        )
        archive.writestr("model/archive_format", "pt2")


def test_package_calls_counts_kiln_targets(tmp_path):
    _package(tmp_path / "model.pt2", ["kiln::attention"] * 4 + ["aten::mm", "kiln::all_reduce"])
    assert package_calls(tmp_path / "model.pt2") == {"all_reduce": 1, "attention": 4}


def test_a_wrong_manifest_fails_the_check(tmp_path):
    _package(tmp_path / "model.pt2", ["kiln::rope_attention"] * 4)
    right = {"lowering": "aoti", "package": "model.pt2", "calls": ["rope_attention"]}
    check_manifest_calls(tmp_path, right)
    for wrong in ([], ["attention"], ["rope_attention", "attention"]):
        with pytest.raises(KilnError, match="the package calls \\['rope_attention'\\]"):
            check_manifest_calls(tmp_path, {**right, "calls": wrong})


@pytest.mark.slow  # an AOTInductor compile of the demo model (a cache hit after test_compile_e2e)
def test_a_built_artifact_records_what_its_package_calls():
    from pathlib import Path

    from lowering.compile import CompileOptions, compile_model

    art = compile_model(CompileOptions(model="demo", target="cpu"), progress=lambda _: None)
    man = art.artifact.manifest
    assert man["lowering"] == "aoti_piecewise"
    pieces = [Path(art.artifact.path) / p["package"] for p in man["pieces"].values()]
    assert man["calls"] == sorted({op for p in pieces for op in package_calls(p)})
    assert "attention" in man["calls"]  # it writes the KV cache: it stays a call
    check_manifest_calls(art.artifact.path, man)
    with pytest.raises(KilnError, match="manifest says"):
        check_manifest_calls(art.artifact.path, {**man, "calls": []})
