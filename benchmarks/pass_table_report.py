"""A pass on/off results file (`benchmarks/pass_table.py`) as a markdown table, as the
dashboard's record, and as the tables in docs/ (regenerated from the files they name).

    python -m benchmarks.pass_table_report RESULTS.json        # print the markdown table
    python -m benchmarks.pass_table_report --docs docs/pass-table.md   # rewrite its tables

A doc holds a generated table between `<!-- pass-table: PATH -->` (PATH: a results file,
relative to the repository root) and `<!-- /pass-table -->`; `--docs` replaces what is between
them with `markdown(PATH's results)`, and a test checks that every such table is up to date.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("itl_bs1_ms", "itl_bs32_ms", "prefill_ms")
GENERATED = re.compile(
    r"(<!-- pass-table: (?P<path>\S+) -->\n)(?P<table>.*?)(<!-- /pass-table -->)", re.S
)


def labelled(rows: list[dict]) -> list[tuple[str, dict, dict]]:
    """(label, row, its group's default row) per row: a group's first `default` row is its
    baseline; a later one is the repeat that shows the run's noise."""
    defaults: dict[str, dict] = {}
    out = []
    for r in rows:
        base = defaults.setdefault(r["group"], r) if r["passes"] == "default" else None
        again = r["passes"] == "default" and base is not r
        out.append((f"{r['passes']} (again)" if again else r["passes"], r, defaults[r["group"]]))
    return out


def markdown(results: dict) -> str:
    """The table: ratios are the variant's time over its group's default (above 1.00: the
    pass, off here, saves that much)."""
    decode, prefill = results["decode"], results["prefill"]
    card = results["card"]
    where = card
    if card.startswith("cpu"):
        load = "-".join(f"{x:.1f}" for x in results.get("load_average_1min", []))
        where = f"**CPU figures, not a GPU's**: {card}, 1-min load average {load}"
    lines = [
        f"{where}, {results['date']}, {results['shape']} shape ({results['lowering']} "
        f"lowering), kiln {results['commit']}: decode ITL p50 (prompt {decode['input_len']}, "
        f"{decode['output_len']} tokens out), TTFT of one {prefill['input_len']}-token prompt.",
        "",
        f"| group | passes | graph | compile s | ITL bs1 ms | ITL bs32 ms | "
        f"prefill {prefill['input_len']} ms | bs1 vs default | bs32 vs default | "
        "prefill vs default |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r, base in labelled(results["rows"]):
        ratios = " | ".join(f"{r[k] / base[k]:.2f}x" for k in FIGURES)
        compile_s = "-" if r["compile_s"] is None else f"{r['compile_s']:.0f}"
        lines.append(
            f"| {r['group']} | `{label}` | {r['graph']} | {compile_s} | {r['itl_bs1_ms']:.2f} | "
            f"{r['itl_bs32_ms']:.2f} | {r['prefill_ms']:.1f} | {ratios} |"
        )
    return "\n".join(lines) + "\n"


def bench_record(results: dict):
    """The dashboard's record of a results file: `bench="passes"`, each variant's measured
    rows labelled with its passes and quantization, in the results' order."""
    from perf_dashboard.records import BenchRecord

    rows = []
    for r in results["rows"]:
        quantization = "fp8" if r["group"] == "fp8" else "none"
        rows += [{**b, "passes": r["passes"], "quantization": quantization} for b in r["bench"]]
    return BenchRecord(bench="passes", model=results["shape"], card=results["card"],
                       results=rows, created=results["created"])  # fmt: skip


def render_docs(text: str, root: Path = ROOT) -> str:
    """`text` with every generated table rebuilt from the results file it names."""

    def table(m: re.Match) -> str:
        results = json.loads((root / m["path"]).read_text())
        return m.group(1) + markdown(results) + m.group(4)

    return GENERATED.sub(table, text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, help="a pass_table.json to print")
    parser.add_argument("--docs", type=Path, nargs="*", default=[], help="docs to regenerate")
    opts = parser.parse_args(argv)
    if opts.results is None and not opts.docs:
        parser.error("give a results file, or --docs FILE...")
    if opts.results is not None:
        print(markdown(json.loads(opts.results.read_text())))
    for doc in opts.docs:
        doc.write_text(render_docs(doc.read_text()))
        print(f"regenerated {doc}")


if __name__ == "__main__":
    main()
