"""Record formats: exact JSON round trip and strict validation that names the bad field."""

from __future__ import annotations

import json

import pytest
from dashboard_samples import make_bench, make_compile

from kiln.errors import KilnError
from perf_dashboard import BenchRecord, CompileRecord, PassRecord, record_from_dict


def test_compile_record_round_trips_through_json(rng):
    rec = make_compile(rng, cold=True, created=1_790_000_123.5)
    back = CompileRecord.from_json(rec.to_json())
    assert back == rec
    assert list(back.phases) == list(rec.phases)  # phase order is the run order
    assert isinstance(back.passes[0], PassRecord)
    assert json.loads(rec.to_json())["kind"] == "compile"


def test_bench_record_round_trips_through_json(rng):
    rec = make_bench(rng, created=1_790_000_999.0)
    back = BenchRecord.from_json(rec.to_json())
    assert back == rec
    assert back.results[0]["engine"] == "kiln"


def test_record_from_dict_dispatches_on_kind(rng):
    compile_rec = make_compile(rng, cold=False, created=1_790_000_000.0)
    bench_rec = make_bench(rng, created=1_790_000_000.0)
    assert record_from_dict(compile_rec.to_dict()) == compile_rec
    assert record_from_dict(bench_rec.to_dict()) == bench_rec


def test_pass_record_node_delta(rng):
    before = rng.randint(50, 100)
    rec = PassRecord("fuse_add_rms_norm", 0.25, 3, before, before - 7)
    assert rec.node_delta == -7


def test_seconds_given_as_int_become_float():
    rec = CompileRecord(model="m", target="cpu", key="k", cold=True, phases={"capture": 3})
    assert rec.phases == {"capture": 3.0} and isinstance(rec.phases["capture"], float)
    assert rec.total_seconds == 3.0


def _compile_dict(rng) -> dict:
    return make_compile(rng, cold=True, created=1_790_000_000.0).to_dict()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("model"), "model"),
        (lambda d: d.update(cold=1), "cold"),
        (lambda d: d.update(cold="true"), "cold"),
        (lambda d: d["phases"].update(capture="fast"), "phases.capture"),
        (lambda d: d["phases"].update(capture=-1.5), "phases.capture"),
        (lambda d: d["phases"].update(capture=float("nan")), "phases.capture"),
        (lambda d: d.update(phases={}), "phases"),
        (lambda d: d["passes"][1].update(rewrites=2.5), "passes[1].rewrites"),
        (lambda d: d["passes"][0].pop("nodes_after"), "passes[0].nodes_after"),
        (lambda d: d["kernels"].update(triton=True), "kernels.triton"),
        (lambda d: d.update(artifact_bytes="12MB"), "artifact_bytes"),
        (lambda d: d.update(git_commit=""), "git_commit"),
        (lambda d: d.update(created="yesterday"), "created"),
        (lambda d: d.update(phasess={}), "phasess"),
        (lambda d: d.update(schema=99), "schema"),
    ],
)
def test_compile_validation_names_the_bad_field(rng, mutate, field):
    data = _compile_dict(rng)
    mutate(data)
    with pytest.raises(KilnError) as info:
        record_from_dict(data)
    assert f"'{field}'" in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("card"), "card"),
        (lambda d: d["results"][0].pop("engine"), "results[0].engine"),
        (lambda d: d["results"][2].update(tok_s="fast"), "results[2].tok_s"),
        (lambda d: d["results"][1].update(batch_size=0), "results[1].batch_size"),
        (lambda d: d["results"][0].update(tokens=5), "results[0].tokens"),
        (lambda d: d["startup"].update(weights=None), "startup.weights"),
        (lambda d: d.update(results=[], startup={}), "results"),
        (lambda d: d.update(results={"engine": "kiln"}), "results"),
        (
            lambda d: d.update(startup_runs=[{"imports": 0.5}, {"imports": "x"}]),
            "startup_runs[1].imports",
        ),
        (lambda d: d.update(startup_runs={"imports": 0.5}), "startup_runs"),
        (lambda d: d.update(startup={}, startup_runs=[{"imports": 0.5}]), "startup_runs"),
    ],
)
def test_bench_validation_names_the_bad_field(rng, mutate, field):
    data = make_bench(rng, created=1_790_000_000.0).to_dict()
    mutate(data)
    with pytest.raises(KilnError) as info:
        record_from_dict(data)
    assert f"'{field}'" in str(info.value)


def test_optional_latency_may_be_null(rng):
    data = make_bench(rng, created=1_790_000_000.0).to_dict()
    del data["results"][0]["ttft_p99_ms"]
    data["results"][1]["itl_p50_ms"] = None
    rec = BenchRecord.from_dict(data)
    assert rec.results[0]["ttft_p99_ms"] is None and rec.results[1]["itl_p50_ms"] is None


def test_direct_construction_is_validated():
    with pytest.raises(KilnError, match="'cold'"):
        CompileRecord(model="m", target="cpu", key="k", cold="yes", phases={"a": 1.0})
    with pytest.raises(KilnError, match="'seconds'"):
        PassRecord("p", -0.1, 0, 1, 1)


def test_unknown_kind_is_rejected():
    with pytest.raises(KilnError, match="'kind'"):
        record_from_dict({"kind": "profile"})
    with pytest.raises(KilnError, match="'record'"):
        record_from_dict([1, 2])


def test_from_dict_of_one_type_rejects_the_other_kind(rng):
    data = _compile_dict(rng)
    data["kind"] = "bench"
    with pytest.raises(KilnError, match="field 'kind' must be 'compile'"):
        CompileRecord.from_dict(data)


def test_pass_records_from_a_trace_skip_disabled_passes(rng):
    from types import SimpleNamespace

    from perf_dashboard.adapters import pass_records

    wall = rng.uniform(0.01, 1.0)
    trace = [
        SimpleNamespace(
            name="fuse_add_rms_norm",
            uuid="u",
            enabled=True,
            wall_s=wall,
            rewrites=4,
            nodes_before=90,
            nodes_after=82,
        ),
        SimpleNamespace(
            name="quantize_fp8",
            uuid="v",
            enabled=False,
            wall_s=0.0,
            rewrites=0,
            nodes_before=0,
            nodes_after=0,
        ),
        {
            "name": "pad_for_kernels",
            "enabled": True,
            "wall_s": wall / 2,
            "rewrites": 1,
            "nodes_before": 82,
            "nodes_after": 83,
        },
    ]
    got = pass_records(trace)
    assert got == (
        PassRecord("fuse_add_rms_norm", wall, 4, 90, 82),
        PassRecord("pad_for_kernels", wall / 2, 1, 82, 83),
    )
