"""The record examples in docs/dashboard.md are valid records (the docs are the contract)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from perf_dashboard import BenchRecord, CompileRecord, record_from_dict

DOC = Path(__file__).resolve().parents[2] / "docs" / "dashboard.md"


def test_json_examples_in_the_docs_validate():
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.S)
    records = [record_from_dict(json.loads(block)) for block in blocks]
    assert [type(r) for r in records] == [CompileRecord, BenchRecord, BenchRecord]
    assert records[1].results[1]["ttft_p50_ms"] is None  # optional figures may be left out
    passes = records[2]
    assert passes.bench == "passes" and passes.results[2]["passes"] == "-fuse_add_rms_norm"
