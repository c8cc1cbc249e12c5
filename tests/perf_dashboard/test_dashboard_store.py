"""The SQLite store: round trip, concurrent writer processes, all-or-nothing imports."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dashboard_samples import make_bench, make_compile

from kiln.errors import KilnError
from perf_dashboard import DashboardStore, record_import, save_record

T0 = 1_790_000_000.0


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_round_trip_keeps_records_and_orders_by_creation(store, rng):
    late = make_compile(rng, cold=False, created=T0 + 10)
    early = make_compile(rng, cold=True, created=T0)
    bench = make_bench(rng, created=T0 + 5)
    id_late, id_early = store.add_compile(late), store.add_compile(early)
    store.add_bench(bench)
    assert store.compiles() == [early, late]  # oldest first, whatever the insert order
    assert store.compile_entries() == [(id_early, early), (id_late, late)]
    assert store.benches() == [bench]
    assert store.compiles(limit=1) == [late]  # the newest one


def test_store_opens_in_wal_mode(store):
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_path_comes_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_DASHBOARD_DB", str(tmp_path / "sub" / "d.sqlite"))
    assert DashboardStore().path == tmp_path / "sub" / "d.sqlite"
    assert (tmp_path / "sub" / "d.sqlite").is_file()


_WRITER = """
import random, sys, time
sys.path.insert(0, sys.argv[4])
from dashboard_samples import make_compile
from perf_dashboard import DashboardStore
path, start, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
records = [make_compile(rng, cold=i % 2 == 0, created=1790000000.0 + i) for i in range(50)]
time.sleep(max(0.0, start - time.time()))  # both writers start at the same instant
store = DashboardStore(path)  # a fresh file: both race to create the schema too
for rec in records:
    store.add_compile(rec)
"""


def test_two_writer_processes_both_succeed(tmp_path):
    path = tmp_path / "shared.sqlite"
    start = time.time() + 1.5  # after both interpreters have started
    here = str(Path(__file__).parent)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(start), str(seed), here],
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (11, 22)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert _count(path, "compiles") == 100
    keys = {rec.key for rec in DashboardStore(path).compiles()}
    assert len(keys) == 100  # no row lost or duplicated


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_import_file_accepts_one_record_or_a_list(store, rng, tmp_path):
    one = make_bench(rng, created=T0)
    many = [make_compile(rng, cold=True, created=T0 + 1), make_bench(rng, created=T0 + 2)]
    assert store.import_file(_write_json(tmp_path / "one.json", one.to_dict())) == [one]
    assert (
        store.import_file(_write_json(tmp_path / "many.json", [r.to_dict() for r in many])) == many
    )
    assert store.benches() == [one, many[1]] and store.compiles() == [many[0]]


def test_record_import_writes_to_the_given_db(tmp_path, rng):
    rec = make_bench(rng, created=T0)
    db = tmp_path / "other.sqlite"
    assert record_import(_write_json(tmp_path / "r.json", rec.to_dict()), db=db) == [rec]
    assert DashboardStore(db).benches() == [rec]


def _bad_files(rng, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = make_compile(rng, cold=True, created=T0).to_dict()
    missing = dict(good)
    del missing["key"]
    wrong = json.loads(json.dumps(good))
    wrong["passes"][2]["seconds"] = "0.5s"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"kind": "compile", "model": ')
    return {
        "bad json": (bad_json, "not valid JSON"),
        "missing field": (_write_json(tmp_path / "m.json", [good, missing]), "'key' is missing"),
        "wrong type": (
            _write_json(tmp_path / "w.json", [good, good, wrong]),
            "'passes[2].seconds'",
        ),
        "empty list": (_write_json(tmp_path / "e.json", []), "empty list"),
        "not a record": (_write_json(tmp_path / "n.json", 42), "'record'"),
        "no such file": (tmp_path / "absent.json", "cannot read"),
    }


@pytest.mark.parametrize(
    "case",
    ["bad json", "missing field", "wrong type", "empty list", "not a record", "no such file"],
)
def test_malformed_import_is_rejected_and_writes_nothing(store, rng, tmp_path, case):
    existing = make_bench(rng, created=T0)
    store.add_bench(existing)
    path, expected = _bad_files(rng, tmp_path)[case]
    with pytest.raises(KilnError) as info:
        store.import_file(path)
    assert expected in str(info.value) and str(path) in str(info.value)
    assert _count(store.path, "compiles") == 0  # the valid records before the bad one too
    assert store.benches() == [existing]


def test_list_import_error_names_the_record_index(store, rng, tmp_path):
    path, _ = _bad_files(rng, tmp_path)["wrong type"]
    with pytest.raises(KilnError, match=r"record \[2\]"):
        store.import_file(path)


def test_not_a_database_gives_a_clear_error(tmp_path):
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"this is not sqlite at all, just text " * 100)
    with pytest.raises(KilnError, match="not a usable dashboard database"):
        DashboardStore(bogus)


def test_save_record_warns_instead_of_failing(tmp_path, rng, capsys):
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"garbage " * 500)
    rec = make_compile(rng, cold=True, created=T0)
    assert save_record(rec, db=bogus) is None
    assert "dashboard record not saved" in capsys.readouterr().err
    with pytest.raises(KilnError):
        save_record(rec, db=bogus, strict=True)
    good = tmp_path / "good.sqlite"
    assert save_record(rec, db=good) == 1
    assert DashboardStore(good).compiles() == [rec]
