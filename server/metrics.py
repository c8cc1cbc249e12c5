"""Prometheus text exposition, hand-written: counters, histograms and engine gauges.

Only the event-loop thread touches these objects (the engine thread hands its timestamps
over with each output batch), so they need no locks.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

# Latency buckets (s): CPU demo steps are milliseconds, a loaded GPU can queue for seconds.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
)

# engine.stats() key -> (metric name, help)
ENGINE_GAUGES = {
    "num_running": ("kiln_num_requests_running", "Sequences in the running batch."),
    "num_waiting": ("kiln_num_requests_waiting", "Sequences waiting to be scheduled."),
    "kv_usage": ("kiln_kv_cache_usage_ratio", "Fraction of KV cache blocks in use (0..1)."),
    "kv_blocks_used": ("kiln_kv_cache_blocks_used", "KV cache blocks in use."),
    "kv_blocks_total": ("kiln_kv_cache_blocks_total", "KV cache blocks allocated."),
    "prefix_cache_hit_rate": ("kiln_prefix_cache_hit_rate", "Prefix cache hit rate (0..1)."),
    "compile_seconds": ("kiln_compile_seconds", "Seconds spent compiling at startup."),
    "load_seconds": ("kiln_load_seconds", "Seconds spent loading the artifact and weights."),
    "core_steps": ("kiln_engine_steps_total", "Engine steps run by the engine core."),
    "core_step_seconds": ("kiln_engine_step_seconds_total", "Seconds inside those steps."),
}


class Histogram:
    """Cumulative-bucket histogram in Prometheus' shape."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help_text, buckets
        self.counts = [0] * (len(buckets) + 1)  # last slot: +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def state(self) -> list:
        return [self.counts, self.sum, self.count]

    def add_state(self, state: list) -> None:
        counts, total, count = state
        self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        self.sum += total
        self.count += count

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        total = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            total += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{self.name}_bucket{{le="{le}"}} {total}')
        lines += [f"{self.name}_sum {self.sum!r}", f"{self.name}_count {self.count}"]
        return lines


class Counter:
    """A counter family keyed by one tuple of label values."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.labels = name, help_text, labels
        self.values: dict[tuple[str, ...], float] = defaultdict(float)

    def inc(self, *label_values: str, by: float = 1) -> None:
        self.values[tuple(label_values)] += by

    def total(self) -> float:
        return sum(self.values.values())

    def state(self) -> list:
        return [[list(key), value] for key, value in self.values.items()]

    def add_state(self, state: list) -> None:
        for key, value in state:
            self.values[tuple(key)] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        if not self.labels and not self.values:
            lines.append(f"{self.name} 0")
        for key, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.labels, key)} {_num(value)}")
        return lines


class ServerMetrics:
    """Everything `/metrics` reports that the server itself measures."""

    def __init__(self) -> None:
        self.requests = Counter(
            "kiln_http_requests_total", "HTTP requests by route and status.", ("route", "status")
        )
        self.finished = Counter(
            "kiln_request_finished_total",
            "Engine requests finished, by reason.",
            ("finish_reason",),
        )
        self.prompt_tokens = Counter("kiln_prompt_tokens_total", "Prompt tokens processed.")
        self.generation_tokens = Counter("kiln_generation_tokens_total", "Tokens generated.")
        self.ttft = Histogram("kiln_time_to_first_token_seconds", "Arrival to first token.")
        self.itl = Histogram("kiln_inter_token_latency_seconds", "Time between output tokens.")
        self.e2e = Histogram("kiln_e2e_request_latency_seconds", "Arrival to finish.")
        self.step = Histogram(
            "kiln_engine_step_duration_seconds", "Engine-core steps, start to end."
        )

    def _all(self) -> dict[str, Counter | Histogram]:
        return {name: m for name, m in vars(self).items() if isinstance(m, Counter | Histogram)}

    def state(self) -> dict[str, list]:
        """Every counter's and histogram's values, as plain data (msgpack / JSON)."""
        return {name: metric.state() for name, metric in self._all().items()}

    def add_state(self, state: dict[str, list]) -> None:
        """Add another process's `state()` to these figures."""
        metrics = self._all()
        for name, values in state.items():
            if name in metrics:
                metrics[name].add_state(values)

    def render(self, engine_stats: dict) -> str:
        lines: list[str] = []
        for metric in self._all().values():
            lines += metric.render()
        lines += render_gauges(engine_stats)
        return "\n".join(lines) + "\n"


def render_gauges(stats: dict) -> list[str]:
    lines = []
    for key, (name, help_text) in ENGINE_GAUGES.items():
        value = stats.get(key)
        if value is None:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_num(value)}"]
    return lines


def parse_metrics(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line (what tests and the load test read)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))
