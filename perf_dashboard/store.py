"""The dashboard's SQLite store of compile and bench records (standard library sqlite3).

Each row keeps the record's full JSON plus a few columns to sort and filter on, so the record
format can grow without a table migration. The database runs in WAL mode with a busy timeout
and every write is one `BEGIN IMMEDIATE` transaction: two `kiln compile` processes finishing
at once both get their row in, and an import either writes all its records or none.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kiln import env
from kiln.errors import KilnError
from perf_dashboard.records import BenchRecord, CompileRecord, Record, parse_json, record_from_dict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS compiles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    model TEXT NOT NULL,
    target TEXT NOT NULL,
    key TEXT NOT NULL,
    cold INTEGER NOT NULL,
    total_seconds REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS compiles_created ON compiles (created);
CREATE TABLE IF NOT EXISTS benches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    bench TEXT NOT NULL,
    model TEXT NOT NULL,
    card TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS benches_created ON benches (created);
"""


class DashboardStore:
    """Compile and bench records in one SQLite file (default `kiln.env.dashboard_db()`)."""

    def __init__(self, path: str | Path | None = None, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path) if path is not None else env.dashboard_db()
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create_schema()

    def _create_schema(self) -> None:
        # Switching to WAL needs a moment of exclusive access; a second process starting at the
        # same instant can see "locked" even with the busy timeout, so retry until the timeout.
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                with self._connect() as conn:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise KilnError(f"dashboard database {self.path}: {e}") from None
                time.sleep(0.05)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        except sqlite3.Error as e:
            raise KilnError(f"cannot open dashboard database {self.path}: {e}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            yield conn
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise
            raise KilnError(
                f"{self.path} is not a usable dashboard database ({e}); "
                "move it away or point --db / KILN_DASHBOARD_DB elsewhere"
            ) from None
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now, waiting up to the timeout
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def add_compile(self, rec: CompileRecord) -> int:
        """Store one compile record; returns its row id."""
        return self.add_many([rec])[0]

    def add_bench(self, rec: BenchRecord) -> int:
        """Store one bench record; returns its row id."""
        return self.add_many([rec])[0]

    def add_many(self, records: Iterable[Record]) -> list[int]:
        """Store several records in one transaction: all of them or, on error, none."""
        records = list(records)
        for rec in records:
            if not isinstance(rec, (CompileRecord, BenchRecord)):
                raise KilnError(f"cannot store {type(rec).__name__}: expected a dashboard record")
        with self._transaction() as conn:
            return [_insert(conn, rec) for rec in records]

    def compile_entries(self, limit: int | None = None) -> list[tuple[int, CompileRecord]]:
        """(row id, record) pairs, oldest first; `limit` keeps only the newest ones."""
        return [(i, CompileRecord.from_dict(d)) for i, d in self._rows("compiles", limit)]

    def bench_entries(self, limit: int | None = None) -> list[tuple[int, BenchRecord]]:
        return [(i, BenchRecord.from_dict(d)) for i, d in self._rows("benches", limit)]

    def compiles(self, limit: int | None = None) -> list[CompileRecord]:
        return [rec for _, rec in self.compile_entries(limit)]

    def benches(self, limit: int | None = None) -> list[BenchRecord]:
        return [rec for _, rec in self.bench_entries(limit)]

    def counts(self) -> tuple[int, int]:
        """(compile records, bench records) stored."""
        with self._connect() as conn:
            compiles = conn.execute("SELECT COUNT(*) FROM compiles").fetchone()[0]
            benches = conn.execute("SELECT COUNT(*) FROM benches").fetchone()[0]
        return int(compiles), int(benches)

    def _rows(self, table: str, limit: int | None) -> list[tuple[int, dict]]:
        sql = f"SELECT id, record FROM {table} ORDER BY created DESC, id DESC"
        params: tuple = ()
        if limit is not None:
            sql, params = sql + " LIMIT ?", (int(limit),)
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [(row_id, json.loads(text)) for row_id, text in reversed(rows)]

    def import_file(self, path: str | Path) -> list[Record]:
        """Import a JSON file holding one record or a list of them.

        Every record is validated before any is written, and all are written in one
        transaction, so a bad file leaves the store exactly as it was.
        """
        records = load_records(path)
        self.add_many(records)
        return records


def _insert(conn: sqlite3.Connection, rec: Record) -> int:
    text = rec.to_json()
    if isinstance(rec, CompileRecord):
        cur = conn.execute(
            "INSERT INTO compiles (created, model, target, key, cold, total_seconds, record)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rec.created, rec.model, rec.target, rec.key, int(rec.cold), rec.total_seconds, text),
        )
    else:
        cur = conn.execute(
            "INSERT INTO benches (created, bench, model, card, record) VALUES (?, ?, ?, ?, ?)",
            (rec.created, rec.bench, rec.model, rec.card, text),
        )
    return int(cur.lastrowid)


def load_records(path: str | Path) -> list[Record]:
    """Read and validate every record in a JSON file (one object or a list); writes nothing."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KilnError(f"cannot read record file {path}: {e.strerror or e}") from None
    try:
        data = parse_json(raw)
    except KilnError as e:
        raise KilnError(f"{path}: {e}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise KilnError(f"{path}: holds an empty list; nothing to import")
    records = []
    for i, item in enumerate(items):
        try:
            records.append(record_from_dict(item))
        except KilnError as e:
            where = f"record [{i}]: " if isinstance(data, list) else ""
            raise KilnError(f"{path}: {where}{e}") from None
    return records


def record_import(path: str | Path, db: str | Path | None = None) -> list[Record]:
    """What `kiln bench --record FILE` calls: import records made on another machine."""
    return DashboardStore(db).import_file(path)


def save_record(rec: Record, db: str | Path | None = None, *, strict: bool = False) -> int | None:
    """What `kiln compile` / `kiln bench` call after each run; returns the row id.

    Unless `strict`, a store failure (read-only disk, foreign file) prints a warning and
    returns None: losing one dashboard row must not fail a compile that took minutes.
    """
    try:
        return DashboardStore(db).add_many([rec])[0]
    except (KilnError, sqlite3.Error, OSError) as e:
        if strict:
            raise
        print(f"kiln: warning: dashboard record not saved: {e}", file=sys.stderr)
        return None
