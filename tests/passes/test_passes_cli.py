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
    assert [line.split()[0] for line in out[1:]] == pass_names()
    rows = {line.split()[0]: line.split()[1:4] for line in out[1:]}
    assert rows["fuse_add_rms_norm"] == ["fusions", "on", "on"]
    assert rows["fuse_rope_attention"] == ["fusions", "off", "off"]
    assert rows["quantize_fp8"] == ["quantize", "on", "off"]  # needs --quantization fp8


def test_json_listing(capsys):
    assert main(["passes", "--json", "--quantization", "fp8", "--passes=-fuse_attn_quant"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == pass_names()
    enabled = {r["name"]: r["enabled"] for r in rows}
    assert enabled["quantize_fp8"] and not enabled["fuse_attn_quant"]
    keys = {"name", "phase", "default", "description", "enabled"}
    assert all(set(r) == keys and r["description"] for r in rows)


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


def test_plus_turns_on_a_pass_that_is_off_by_default(capsys):
    assert main(["passes", "--json", "--passes", "+fuse_rope_attention"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert (
        rows["fuse_rope_attention"]["default"] == "off" and rows["fuse_rope_attention"]["enabled"]
    )


def test_check_reports_a_consumed_pattern_and_exits_1(capsys):
    assert main(["passes", "--check", "demo"]) == 0
    assert "0 fusion(s) stopped matching" in capsys.readouterr().out
    assert main(["passes", "--check", "demo", "--passes", "+fuse_rope_attention"]) == 1
    out = capsys.readouterr().out
    assert "quantization fp8" in out and "quantization none" in out
    assert (
        "stopped matching: fuse_attn_quant: 4 matches alone, 0 in pipeline after "
        "fuse_rope_attention" in out
    )
