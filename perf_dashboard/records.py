"""The record formats every `kiln compile` and `kiln bench` writes: the dashboard's contract.

A record is a frozen dataclass validated on construction, so a bad value fails where it was
made (naming the field) rather than when the dashboard draws it. `to_json()`/`from_json()`
round-trip exactly; the JSON form carries `"kind"` ("compile" or "bench") and `"schema"` so a
file produced on another machine (the GPU box) can be imported with `kiln bench --record FILE`.

Example JSON (one compile)::

    {"kind": "compile", "schema": 1, "model": "demo", "target": "cpu", "key": "ab12...",
     "cold": true, "phases": {"capture": 1.2, "passes": 0.3, "lowering": 4.0},
     "passes": [{"name": "fuse_add_rms_norm", "seconds": 0.01, "rewrites": 4,
                 "nodes_before": 120, "nodes_after": 112}],
     "kernels": {"triton": 6, "native": 3}, "artifact_bytes": 123456,
     "versions": {"torch": "2.13.0"}, "git_commit": null, "host": "build-1",
     "created": 1790000000.0}
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from kiln.errors import KilnError
from perf_dashboard.fields import (
    RecordError,
    check_bool,
    check_count_map,
    check_int,
    check_keys,
    check_list,
    check_mapping,
    check_number,
    check_seconds_map,
    check_str,
    check_str_map,
)

SCHEMA = 1

# Bench result rows: required keys, then optional measurements (null when not measured).
ROW_REQUIRED = ("engine", "batch_size", "input_len", "output_len", "tok_s")
ROW_OPTIONAL = ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "peak_memory_gb",
                # `kiln bench serve` rows (the served figure and its ratios to offline and to
                # its own ITL p50)
                "ttft_p90_ms", "itl_p90_ms", "e2e_p50_ms", "e2e_p90_ms", "e2e_p99_ms", "req_s",
                "goodput_req_s", "request_rate", "served_ratio", "ttft_p50_over_offline",
                "itl_p99_over_p50", "api_servers")  # fmt: skip
# Optional text labels of what a row's engine ran: its `--passes` toggles ("default": the
# pipeline as registered) and `--quantization` ("none"); a pass on/off table's rows carry both.
ROW_LABELS = ("passes", "quantization")


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass in __post_init__


class _JsonRecord:
    """to_json/from_json shared by the record types; subclasses define to_dict/from_dict."""

    kind: ClassVar[str] = ""
    optional_fields: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {"kind": self.kind, "schema": SCHEMA, **body}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> Any:
        """Build from parsed JSON, rejecting missing, unknown or mistyped fields."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        required = [n for n in names if n not in cls.optional_fields]
        check_keys(data, "", ["kind", *required], ["schema", *cls.optional_fields])
        if data["kind"] != cls.kind:
            raise RecordError("kind", f"must be '{cls.kind}', got {data['kind']!r}")
        if data.get("schema", SCHEMA) != SCHEMA:
            raise RecordError(
                "schema", f"must be {SCHEMA} (this kiln's format), got {data['schema']!r}"
            )
        return cls(**{n: data[n] for n in names if n in data})

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Any:
        """Parse a JSON string (or an already-parsed object) into a validated record."""
        return cls.from_dict(parse_json(text) if isinstance(text, (str, bytes)) else text)


def parse_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KilnError(f"not valid JSON: {e}") from None


@dataclass(frozen=True)
class PassRecord:
    """What one pass did during one compile: time, rewrites, graph size before and after."""

    name: str
    seconds: float
    rewrites: int
    nodes_before: int
    nodes_after: int

    def __post_init__(self) -> None:
        check_str(self.name, "name")
        _set(self, "seconds", check_number(self.seconds, "seconds"))
        check_int(self.rewrites, "rewrites")
        check_int(self.nodes_before, "nodes_before")
        check_int(self.nodes_after, "nodes_after")

    @property
    def node_delta(self) -> int:
        return self.nodes_after - self.nodes_before

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> PassRecord:
        check_keys(data, "", [f.name for f in fields(cls)], [])
        return cls(**data)


def _check_passes(value: Any) -> tuple[PassRecord, ...]:
    out = []
    for i, item in enumerate(check_list(value, "passes")):
        if isinstance(item, PassRecord):
            out.append(item)
            continue
        try:
            out.append(PassRecord.from_dict(item))
        except RecordError as e:
            raise e.under(f"passes[{i}]") from None
    return tuple(out)


@dataclass(frozen=True)
class CompileRecord(_JsonRecord):
    """One `kiln compile`: phases in the order they ran (seconds), per-pass detail, kernels."""

    kind: ClassVar[str] = "compile"
    optional_fields: ClassVar[tuple[str, ...]] = (
        "passes",
        "kernels",
        "artifact_bytes",
        "versions",
        "git_commit",
    )

    model: str
    target: str
    key: str
    cold: bool
    phases: dict[str, float]
    passes: tuple[PassRecord, ...] = ()
    kernels: dict[str, int] = field(default_factory=dict)  # provider -> kernel count
    artifact_bytes: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    host: str = field(default_factory=socket.gethostname)
    created: float = field(default_factory=time.time)  # unix time

    def __post_init__(self) -> None:
        for name in ("model", "target", "key", "host"):
            check_str(getattr(self, name), name)
        check_bool(self.cold, "cold")
        _set(self, "phases", check_seconds_map(self.phases, "phases", non_empty=True))
        _set(self, "passes", _check_passes(self.passes))
        _set(self, "kernels", check_count_map(self.kernels, "kernels"))
        check_int(self.artifact_bytes, "artifact_bytes")
        _set(self, "versions", check_str_map(self.versions, "versions"))
        check_str(self.git_commit, "git_commit", nullable=True)
        _set(self, "created", check_number(self.created, "created", minimum=1.0))

    @property
    def total_seconds(self) -> float:
        return sum(self.phases.values())

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["passes"] = [p.to_dict() for p in self.passes]
        data["phases"], data["kernels"] = dict(self.phases), dict(self.kernels)
        data["versions"] = dict(self.versions)
        return data


def _check_row(row: Any, where: str) -> dict[str, Any]:
    check_keys(row, where, ROW_REQUIRED, ROW_OPTIONAL + ROW_LABELS)
    out: dict[str, Any] = {"engine": check_str(row["engine"], f"{where}.engine")}
    out["batch_size"] = check_int(row["batch_size"], f"{where}.batch_size", minimum=1)
    out["input_len"] = check_int(row["input_len"], f"{where}.input_len")
    out["output_len"] = check_int(row["output_len"], f"{where}.output_len")
    out["tok_s"] = check_number(row["tok_s"], f"{where}.tok_s")
    for name in ROW_OPTIONAL:
        out[name] = check_number(row.get(name), f"{where}.{name}", nullable=True)
    for name in ROW_LABELS:
        if row.get(name) is not None:
            out[name] = check_str(row[name], f"{where}.{name}")
    return out


@dataclass(frozen=True)
class BenchRecord(_JsonRecord):
    """One `kiln bench` run: throughput/latency rows per engine and/or a startup breakdown.

    `results` rows hold `engine` ("kiln", "hf", ...), `batch_size`, `input_len`, `output_len`,
    `tok_s`, and optionally `ttft_p50_ms`, `ttft_p99_ms`, `itl_p50_ms`, `itl_p99_ms`,
    `peak_memory_gb` (null when not measured), and the labels `passes` and `quantization`
    (kept only when given; a `bench="passes"` record is a pass on/off table). `startup` maps
    load phase -> seconds (the median over the runs); `startup_runs` holds each run's own map,
    in run order; `weight_stream` the weight stream's figures (medians: bytes, threads,
    start_s/done_s after exec, copy_s, read/h2d/copy GB/s; `kiln bench startup`); `startup_cpu`
    the CPU seconds the server and its engine core had used by the first completion (medians;
    `--serve`).
    """

    kind: ClassVar[str] = "bench"
    optional_fields: ClassVar[tuple[str, ...]] = (
        "results", "startup", "startup_runs", "weight_stream", "startup_cpu"
    )  # fmt: skip

    bench: str  # "throughput" | "startup" | "serve" (`kiln bench`) | "serve_load" | ...
    model: str
    card: str  # e.g. "NVIDIA H200" or "cpu"
    results: tuple[dict[str, Any], ...] = ()
    startup: dict[str, float] = field(default_factory=dict)
    startup_runs: tuple[dict[str, float], ...] = ()
    weight_stream: dict[str, float] = field(default_factory=dict)
    startup_cpu: dict[str, float] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        for name in ("bench", "model", "card", "host"):
            check_str(getattr(self, name), name)
        rows = check_list(self.results, "results")
        _set(self, "results", tuple(_check_row(r, f"results[{i}]") for i, r in enumerate(rows)))
        _set(self, "startup", check_seconds_map(self.startup, "startup"))
        runs = check_list(self.startup_runs, "startup_runs")
        _set(self, "startup_runs", tuple(check_seconds_map(r, f"startup_runs[{i}]") for i, r in enumerate(runs)))  # fmt: skip
        _set(self, "weight_stream", check_seconds_map(self.weight_stream, "weight_stream"))
        _set(self, "startup_cpu", check_seconds_map(self.startup_cpu, "startup_cpu"))
        if self.startup_runs and not self.startup:
            raise RecordError("startup_runs", "is given without 'startup', their median")
        _set(self, "created", check_number(self.created, "created", minimum=1.0))
        if not self.results and not self.startup:
            raise RecordError("results", "is empty and so is 'startup': a bench record needs one")

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["results"] = [dict(r) for r in self.results]
        data["startup"] = dict(self.startup)
        data["startup_runs"] = [dict(r) for r in self.startup_runs]
        data["weight_stream"] = dict(self.weight_stream)
        data["startup_cpu"] = dict(self.startup_cpu)
        return data


Record = CompileRecord | BenchRecord
RECORD_TYPES: dict[str, type[CompileRecord] | type[BenchRecord]] = {
    "compile": CompileRecord,
    "bench": BenchRecord,
}


def record_from_dict(data: Any) -> Record:
    """Build whichever record `data["kind"]` names."""
    mapping = check_mapping(data, "record")
    kind = mapping.get("kind")
    if kind not in RECORD_TYPES:
        raise RecordError("kind", f"must be 'compile' or 'bench', got {kind!r}")
    return RECORD_TYPES[kind].from_dict(mapping)
