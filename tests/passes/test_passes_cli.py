"""`kiln passes`: listing, JSON, toggles, errors, and the per-pass numerics table."""

from __future__ import annotations

import argparse
import json

from kiln.cli import main
from kiln.commands.flags import add_engine_arguments
from kiln.commands.passes import parse_pass_toggles
from passes.pipeline import pass_names


def test_lists_pipeline_with_descriptions(capsys):
    assert main(["passes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == pass_names()
    assert "fuse_add_rms_norm          on   residual add + rms_norm" in "\n".join(out)


def test_json_listing(capsys):
    assert main(["passes", "--json", "--quantization", "fp8", "--passes=-fuse_attn_quant"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == pass_names()
    enabled = {r["name"]: r["enabled"] for r in rows}
    assert enabled["quantize_fp8"] and not enabled["fuse_attn_quant"]
    assert all(set(r) == {"name", "description", "enabled"} and r["description"] for r in rows)


def test_unknown_pass_exits_2_listing_valid_names(capsys):
    assert main(["passes", "--passes", "+fuse_everything"]) == 2
    err = capsys.readouterr().err
    assert "unknown pass 'fuse_everything'" in err and "pad_for_kernels" in err


def test_passes_argument_is_reusable():
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser, ["passes"])
    toggles = parse_pass_toggles(parser.parse_args(["--passes", "none,+fuse_qk_norm_rope"]).passes)
    assert toggles.all_off and toggles.is_on("fuse_qk_norm_rope")
    assert not toggles.is_on("fuse_add_rms_norm")
    assert parse_pass_toggles(None).is_on("fuse_add_rms_norm")


def test_check_numerics_prints_a_table_per_pass(capsys):
    assert main(["passes", "--check-numerics", "demo", "--prompt-lens", "5,1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert list(rows) == pass_names()
    assert rows["fuse_add_rms_norm"][1:3] == ["yes", "8"]
    assert float(rows["fuse_add_rms_norm"][3]) < 1e-4  # max deviation from the eager model
    assert rows["quantize_fp8"][1] == "no" and rows["quantize_fp8"][3] == "-"
