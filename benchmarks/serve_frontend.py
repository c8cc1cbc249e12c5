"""What the API server process can deliver: `kiln serve`'s server and engine-core processes
around a synthetic engine whose steps take a fixed time, under `kiln bench serve`'s clients.

    python benchmarks/serve_frontend.py --step-ms 1.4 --concurrency 32,128 [--json R.json]

The synthetic engine (`SyntheticEngine`, built in the core process as `kiln serve` builds a
real one) gives every running request one token per step and sleeps `--step-ms` a step, so
the engine side costs what a GPU step of that length costs the host: nothing but the wait.
Everything else is the product's: the core loop and its messages (the core is spawned here,
where `kiln serve` forks it; the collector is set as `kiln serve` sets it), the server's reader,
detokenizer (the demo model's tokenizer), request tracking, metrics, SSE framing and aiohttp,
and the bench's client processes. Per load it reports what `kiln bench serve` does (tok/s,
TTFT, ITL p50/p99) beside the engine's own pace (one token per client per step: the ITL a
server that keeps up delivers), and the server process's CPU seconds per chunk, the figure
that says how many chunks per second one server process can frame and write.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from kiln.benchmarking.serve import COMPLETIONS, default_client_procs, request_body  # noqa: E402
from kiln.benchmarking.serve_client import ClientPool, split_clients  # noqa: E402
from kiln.benchmarking.stats import percentile  # noqa: E402


class _Schedule:
    def __init__(self, decodes: int, prefill: int) -> None:
        self.num_decodes, self.num_prefill_tokens = decodes, prefill


class _Loaded:
    """What `EngineCore` and `engine_info` read of a loaded model."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.graphs_pending = False
        self.phases: dict = {}
        self.weight_figures: dict = {}
        self.marks: dict = {}

    def describe(self) -> str:
        return "synthetic engine (benchmarks/serve_frontend.py)"


class SyntheticEngine:
    """`runtime.engine.Engine`'s contract as the engine core uses it: each step sleeps
    `step_s`, then gives every running request one random token id of the vocabulary."""

    model_name = "synthetic"

    def __init__(self, step_s: float, tokenizer, max_model_len: int = 4096) -> None:
        self.step_s = step_s
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.loaded = _Loaded(len(tokenizer))
        self.detokenize = True  # the core sets it False; this engine never detokenizes
        self.last_schedule = _Schedule(0, 0)
        self._requests: dict[str, list] = {}  # id -> [tokens left, prompt tokens to prefill]
        self._rng = random.Random(0)

    def add_request(self, request_id: str, prompt_ids: list[int], params) -> None:
        self._requests[request_id] = [params.max_tokens, len(prompt_ids)]

    def abort(self, request_id: str) -> None:
        self._requests.pop(request_id, None)

    def step(self):
        from runtime.outputs import RequestOutput

        time.sleep(self.step_s)
        outputs, vocab = [], self.loaded.vocab_size
        prefill = sum(r[1] for r in self._requests.values())
        self.last_schedule = _Schedule(len(self._requests), prefill)
        for rid, r in list(self._requests.items()):
            r[0] -= 1
            r[1] = 0
            token = self._rng.randrange(vocab)
            done = r[0] <= 0
            if done:
                del self._requests[rid]
            outputs.append(RequestOutput(rid, [], [token], "", [], "", done,
                                         "length" if done else None))  # fmt: skip
        return outputs

    def stats(self) -> dict:
        return {"num_running": len(self._requests), "num_waiting": 0, "kv_usage": 0.0,
                "kv_blocks_used": 0, "kv_blocks_total": 1, "prefix_cache_hit_rate": 0.0,
                "compile_seconds": 0.0, "load_seconds": 0.0}  # fmt: skip


def build_synthetic(step_s: float) -> SyntheticEngine:
    """The engine core's build function (module level: the core may be spawned)."""
    from kiln import startup
    from model_defs.registry import resolve_model_path
    from runtime.tokenizer import load_tokenizer

    engine = SyntheticEngine(step_s, load_tokenizer(resolve_model_path("demo")))
    startup.serve_gc()  # as `kiln serve`'s core sets its collector
    return engine


def _serve_main(step_s: float, api_servers: int, port_file: str) -> None:
    """API server 0: a core with the synthetic engine, the product's app and process layout."""
    from kiln import startup
    from runtime.engine_core import spawn_core
    from server.config import ServerConfig
    from server.launch import serve_core

    startup.pause_gc()  # the collector as `kiln serve` sets it: paused, frozen, then raised
    spawned = spawn_core(build_synthetic, step_s, frontends=api_servers)

    def connected(core) -> None:
        startup.resume_gc()
        startup.serve_gc()

    def ready(url: str, core) -> None:
        others = core.others.processes if core.others is not None else []
        pids = [os.getpid(), *(p.pid for p in others)]
        tmp = Path(port_file + ".tmp")
        tmp.write_text(json.dumps({"url": url, "pids": pids}))
        tmp.replace(port_file)  # the reader sees it whole

    config = ServerConfig(max_queue=100_000)
    raise SystemExit(serve_core(spawned, config, "127.0.0.1", 0, on_connect=connected,
                                on_ready=ready))  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(step_ms: float, loads: list[int], input_len: int, output_len: int,
        client_procs: int | None, api_servers: int = 1) -> dict:  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    port_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"kiln-frontend-{os.getpid()}.url"
    port_file.unlink(missing_ok=True)
    server = ctx.Process(target=_serve_main, args=(step_ms / 1000, api_servers, str(port_file)))
    server.start()
    try:
        deadline = time.monotonic() + 120
        while not port_file.is_file():
            if not server.is_alive() or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start (exit code {server.exitcode})")
            time.sleep(0.05)
        started = json.loads(port_file.read_text())
        url, pids = started["url"], started["pids"]
        procs = client_procs or default_client_procs(max(loads))
        rows = []
        with ClientPool(procs, url + COMPLETIONS, {}) as pool:
            warm = [request_body("synthetic", [1] * input_len, 4) for _ in range(max(8, procs))]
            pool.run(split_clients(warm, len(warm), procs))
            for clients in loads:
                rng = random.Random(clients)
                bodies = [request_body("synthetic", [rng.randrange(1, 500) for _ in range(input_len)],
                                       output_len) for _ in range(4 * clients)]  # fmt: skip
                cpu0 = [_cpu_seconds(pid) for pid in pids]
                samples = pool.run(split_clients(bodies, clients, min(procs, clients)))
                cpu = [_cpu_seconds(pid) - c0 for pid, c0 in zip(pids, cpu0, strict=True)]
                rows.append(_row(clients, step_ms, samples, cpu))
                print(json.dumps(rows[-1]), flush=True)
        return {"step_ms": step_ms, "api_servers": api_servers, "input_len": input_len,
                "output_len": output_len,
                "client_procs": procs, "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                "rows": rows}  # fmt: skip
    finally:
        if server.is_alive():
            os.kill(server.pid, signal.SIGTERM)
        server.join(30)
        port_file.unlink(missing_ok=True)


def _row(clients: int, step_ms: float, samples, cpu: list[float]) -> dict:
    """One load's figures; `cpu` holds each API server process's CPU seconds."""
    good = [s for s in samples if s.ok and s.stamps]
    if not good:
        return {"clients": clients, "errors": len(samples)}
    chunks = sum(len(s.stamps) for s in good)
    first, last = min(s.sent for s in good), max(s.stamps[-1] for s in good)
    itls = [b - a for s in good for a, b in zip(s.stamps, s.stamps[1:])]
    ttfts = [s.stamps[0] - s.sent for s in good]
    p50, p99 = percentile(itls, 50), percentile(itls, 99)
    return {
        "clients": clients, "errors": len(samples) - len(good),
        "tok_s": chunks / (last - first),
        "engine_pace_tok_s": clients * 1000 / step_ms if step_ms > 0 else None,
        "chunks_per_request": [min(len(s.stamps) for s in good), max(len(s.stamps) for s in good)],
        "ttft_p50_ms": percentile(ttfts, 50) * 1e3,
        "itl_p50_ms": p50 * 1e3, "itl_p99_ms": p99 * 1e3, "itl_p99_over_p50": p99 / p50 if p50 else None,
        "server_cpu_s": sum(cpu), "server_cpu_us_per_chunk": sum(cpu) / chunks * 1e6,
        "server_busy": [c / (last - first) for c in cpu],  # per API server process
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step-ms", type=float, default=1.4, help="the synthetic step's length")
    ap.add_argument("--concurrency", default="32,128")
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--client-procs", type=int, help="default: kiln bench serve's")
    ap.add_argument("--api-servers", type=int, default=1, help="as `kiln serve --api-servers`")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args(argv)
    loads = [int(c) for c in args.concurrency.split(",")]
    result = run(args.step_ms, loads, args.input_len, args.output_len, args.client_procs,
                 args.api_servers)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 1 if any(r["errors"] for r in result["rows"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
