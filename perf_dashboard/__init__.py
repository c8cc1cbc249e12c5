"""Compile and benchmark records in SQLite, and the HTML dashboard drawn from them.

Standard library only: nothing here imports torch, so `kiln dashboard` and the server's
`/dashboard` route stay cheap. The record formats in `records.py` are the contract that
`kiln compile` and `kiln bench` write.
"""

from perf_dashboard.adapters import pass_records
from perf_dashboard.records import BenchRecord, CompileRecord, PassRecord, record_from_dict
from perf_dashboard.report import render_html
from perf_dashboard.store import DashboardStore, load_records, record_import, save_record

__all__ = [
    "BenchRecord",
    "CompileRecord",
    "DashboardStore",
    "PassRecord",
    "load_records",
    "pass_records",
    "record_from_dict",
    "record_import",
    "render_html",
    "save_record",
]
