"""benchmarks/pass_table_report.py: the table in docs/ is generated from the results file it
names, and the dashboard's record of a results file renders as its pass table."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.pass_table_report import GENERATED, ROOT, bench_record, markdown, render_docs
from perf_dashboard import DashboardStore, render_html

DOCS = sorted((ROOT / "docs").glob("*.md"))


def bench(itl: float) -> list[dict]:
    decode = {"engine": "kiln", "input_len": 128, "output_len": 64, "ttft_p50_ms": 3.0}
    return [
        {**decode, "batch_size": 1, "tok_s": 1e3 / itl, "itl_p50_ms": itl},
        {**decode, "batch_size": 32, "tok_s": 32e3 / itl, "itl_p50_ms": 2 * itl},
        {"engine": "kiln", "batch_size": 1, "input_len": 2048, "output_len": 2, "tok_s": 9.0,
         "ttft_p50_ms": 40 * itl, "itl_p50_ms": None},
    ]  # fmt: skip


def row(passes: str, itl: float, graph: str = "compiled", compile_s: float | None = 30.0):
    figures = {"itl_bs1_ms": itl, "itl_bs32_ms": 2 * itl, "prefill_ms": 40 * itl}
    return {"group": "bf16", "passes": passes, "graph": graph, "compile_s": compile_s,
            **figures, "bench": bench(itl)}  # fmt: skip


def results(card: str = "NVIDIA H100 80GB HBM3") -> dict:
    return {
        "card": card, "date": "2026-12-07", "created": 1_796_600_000.0, "shape": "llama3-8b",
        "lowering": "plan", "commit": "abc1234", "load_average_1min": [1.5, 2.25],
        "decode": {"batch_sizes": [1, 32], "input_len": 128, "output_len": 64},
        "prefill": {"batch_sizes": [1], "input_len": 2048, "output_len": 2, "seed": 1},
        "rows": [row("default", 5.0), row("-fuse_add_rms_norm", 5.5),
                 row("-eliminate_noops", 5.0, "same graph", None),
                 row("default", 5.1, "cached", None)],
    }  # fmt: skip


def test_markdown_gives_each_variant_over_the_first_default():
    lines = markdown(results()).splitlines()
    assert lines[0].startswith("NVIDIA H100 80GB HBM3, 2026-12-07, llama3-8b shape (plan")
    body = [line for line in lines if line.startswith("| bf16")]
    assert body[0] == (
        "| bf16 | `default` | compiled | 30 | 5.00 | 10.00 | 200.0 | 1.00x | 1.00x | 1.00x |"
    )
    assert body[1].endswith("| 1.10x | 1.10x | 1.10x |")
    assert body[2].startswith("| bf16 | `-eliminate_noops` | same graph | - |")
    assert body[3].startswith("| bf16 | `default (again)` | cached | - | 5.10 |")
    assert body[3].endswith("| 1.02x | 1.02x | 1.02x |")


def test_cpu_figures_say_so_with_the_host_load():
    first = markdown(results("cpu (2 cores)")).splitlines()[0]
    assert first.startswith("**CPU figures, not a GPU's**: cpu (2 cores), 1-min load average")
    assert "1.5-2.2" in first


def test_the_record_of_a_results_file_renders_as_its_pass_table(tmp_path):
    rec = bench_record(results())
    assert rec.bench == "passes" and len(rec.results) == 4 * 3
    assert {(r["passes"], r["quantization"]) for r in rec.results} == {
        ("default", "none"),
        ("-fuse_add_rms_norm", "none"),
        ("-eliminate_noops", "none"),
    }
    store = DashboardStore(tmp_path / "dash.sqlite")
    store.add_bench(rec)
    body = render_html(store).split('<section id="pass-table">')[1].split("</section>")[0]
    assert "default (again)" in body and "1.10\u00d7" in body
    assert "default&#x27;s (same graph)" in body


def test_render_docs_rewrites_the_table_between_the_markers(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(results()))
    doc = "intro\n<!-- pass-table: r.json -->\nstale\n<!-- /pass-table -->\nend\n"
    out = render_docs(doc, tmp_path)
    assert out == "intro\n<!-- pass-table: r.json -->\n" + markdown(results()) + (
        "<!-- /pass-table -->\nend\n"
    )


def test_every_generated_table_in_docs_is_up_to_date():
    """Regenerate with `python -m benchmarks.pass_table_report --docs docs/pass-table.md`."""
    generated = {doc: doc.read_text() for doc in DOCS if GENERATED.search(doc.read_text())}
    assert ROOT / "docs" / "pass-table.md" in generated
    for doc, text in generated.items():
        for match in GENERATED.finditer(text):
            assert (ROOT / match["path"]).is_file(), f"{doc.name} names {match['path']}"
        assert render_docs(text) == text, f"{Path(doc).name}: a table differs from its results"
