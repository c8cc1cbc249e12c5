"""`kiln bench serve`: loads, goodput, and one real run against a self-started server."""

from __future__ import annotations

import json

import pytest

from kiln.benchmarking.serve import ServeBench, Slo, default_client_procs, parse_loads, summarize
from kiln.benchmarking.serve_client import Sample
from kiln.cli import main
from kiln.errors import KilnError

pytestmark = pytest.mark.timeout(600)


def test_loads_parse_and_bad_ones_say_what_to_pass():
    assert parse_loads("32,128", None) == (("concurrency", 32.0), ("concurrency", 128.0))
    assert parse_loads("32", "2,inf") == (("rate", 2.0), ("rate", float("inf")))
    for conc, rate in (("3.5", None), ("x", None), ("32", "fast")):
        with pytest.raises(KilnError, match="like"):
            parse_loads(conc, rate)


def test_goodput_counts_only_requests_within_every_slo():
    fast = Sample(ok=True, ttft=0.05, itls=[0.01, 0.01], e2e=0.07, tokens=3)
    slow_start = Sample(ok=True, ttft=0.5, itls=[0.01, 0.01], e2e=0.52, tokens=3)
    slow_tokens = Sample(ok=True, ttft=0.05, itls=[0.2, 0.2], e2e=0.45, tokens=3)
    failed = Sample(ok=False, error="HTTP 503")
    samples = [fast, slow_start, slow_tokens, failed]
    row = summarize(samples, 2.0, Slo(ttft_ms=100, itl_ms=50))
    assert row["goodput_req_s"] == 0.5  # only `fast`, over 2 s
    assert row["req_s"] == 1.5 and row["tok_s"] == 4.5 and row["errors"] == 1
    assert summarize(samples, 2.0, Slo())["goodput_req_s"] == 1.5  # no bound: every success
    assert row["ttft_p50_ms"] == 50.0 and row["ttft_p99_ms"] == pytest.approx(
        491.0
    )  # linear between 50, 50, 500


def test_client_processes_default_to_one_per_16_clients_leaving_a_core(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert [default_client_procs(n) for n in (1, 16, 17, 32, 128, 1000)] == [1, 1, 2, 2, 8, 15]
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_client_procs(128) == 1


def test_client_procs_below_one_say_what_to_pass():
    with pytest.raises(KilnError, match="--client-procs=0 must be >= 1"):
        ServeBench(model="demo", url=None, loads=(("concurrency", 2.0),), input_len=8,
                   output_len=5, num_prompts=None, prompts_file=None, slo=Slo(), offline=False,
                   client_procs=0)  # fmt: skip


def test_api_servers_are_for_a_server_the_bench_starts():
    common = dict(model="demo", loads=(("concurrency", 2.0),), input_len=8, output_len=5,
                  num_prompts=None, prompts_file=None, slo=Slo(), offline=False)  # fmt: skip
    with pytest.raises(KilnError, match="--api-servers=2: .*not with --url"):
        ServeBench(url="http://127.0.0.1:8000", api_servers=2, **common)
    with pytest.raises(KilnError, match="--api-servers=0: must be >= 1"):
        ServeBench(url=None, api_servers=0, **common)


def test_bench_serve_reports_served_beside_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KILN_DASHBOARD_DB", str(tmp_path / "dash.sqlite"))
    out = tmp_path / "serve.json"
    argv = ["bench", "serve", "demo", "--compile", "never", "--concurrency", "2",
            "--input-len", "8", "--output-len", "5", "--num-prompts", "4",
            "--slo-ttft-ms", "60000", "--client-procs", "2", "--api-servers", "2",
            "--json-out", str(out)]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "2 clients" in printed and "vs offline" in printed
    assert "kiln-serve (2 API servers)" in printed
    assert "2 clients: 2 client process(es)" in captured.err
    record = json.loads(out.read_text())
    assert record["bench"] == "serve"
    offline, served = record["results"]
    assert (offline["engine"], served["engine"]) == ("kiln-offline", "kiln-serve")
    assert served["batch_size"] == offline["batch_size"] == 2
    assert served["api_servers"] == 2  # the server it started had two API server processes
    assert served["served_ratio"] == pytest.approx(served["tok_s"] / offline["tok_s"])
    # 4 requests x 5 tokens, all within the SLO
    assert served["req_s"] == pytest.approx(served["goodput_req_s"])
    assert served["tok_s"] == pytest.approx(5 * served["req_s"])
    assert 0 < served["ttft_p50_ms"] <= served["ttft_p90_ms"] <= served["ttft_p99_ms"]
    assert 0 < served["itl_p50_ms"] <= served["itl_p99_ms"]
    assert served["itl_p99_over_p50"] == pytest.approx(served["itl_p99_ms"] / served["itl_p50_ms"])
    ttft_ratio = served["ttft_p50_ms"] / offline["ttft_p50_ms"]
    assert served["ttft_p50_over_offline"] == pytest.approx(ttft_ratio)
    assert f"TTFT p50 {ttft_ratio:.2f}x offline" in printed


def test_full_vocab_tokenizer_gives_every_id_text(tmp_path):
    from benchmarks.full_vocab_tokenizer import widen
    from model_defs.registry import resolve_model_path
    from runtime.tokenizer import load_tokenizer

    demo = resolve_model_path("demo")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (src / name).write_text((demo / name).read_text())
    (src / "config.json").write_text(json.dumps({"vocab_size": 2000}))
    assert widen(src, tmp_path / "dst") == 2000 - 512
    before, after = load_tokenizer(src), load_tokenizer(tmp_path / "dst")
    assert before.decode([1500, 1999]) == "" and after.decode([1500, 1999]) == " w1500 w1999"
    assert after.encode("hello world") == before.encode("hello world")
    assert (tmp_path / "dst" / "config.json").is_symlink()


def test_every_chunk_with_a_choice_is_a_token_event_but_the_chat_role_chunk():
    from kiln.benchmarking.serve_client import is_token_chunk

    assert is_token_chunk({"choices": [{"index": 0, "text": "", "finish_reason": None}]})
    assert is_token_chunk({"choices": [{"index": 0, "delta": {"content": ""}}]})
    assert is_token_chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert not is_token_chunk({"choices": [{"delta": {"role": "assistant", "content": ""}}]})
    assert not is_token_chunk({"choices": [], "usage": {"completion_tokens": 3}})


def test_children_start_from_the_repository_root():
    """`python -m kiln` in ROOT must find this checkout's package, not an installed one."""
    from kiln.benchmarking.serve import ROOT

    assert (ROOT / "kiln" / "__main__.py").is_file() and (ROOT / "pyproject.toml").is_file()
