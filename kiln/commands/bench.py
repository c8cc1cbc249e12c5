"""`kiln bench`: throughput/latency against HF, start-up phases, and importing records.

    kiln bench throughput MODEL --batch-sizes 1,8,32 --input-len 128 --output-len 128 --vs hf
    kiln bench startup MODEL --runs 5
    kiln bench startup MODEL --serve --runs 5     # exec `kiln serve` -> /health -> a completion
    kiln bench serve MODEL --concurrency 32,128 --input-len 128 --output-len 64
    kiln bench serve --url http://127.0.0.1:8000 --request-rate 2,8,inf --no-offline
    kiln bench --record results.json      # import a record written with --json-out elsewhere

Every run prints a table, stores one `BenchRecord` in the dashboard database, and with
`--json-out FILE` writes that record as JSON (what `--record` imports on another machine).
The measuring lives in `kiln/benchmarking/`; this module parses flags and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kiln.commands.flags import add_engine_arguments, engine_kwargs
from kiln.errors import KilnError

DB_HELP = "dashboard database (default: KILN_DASHBOARD_DB or <cache dir>/dashboard.sqlite)"
ROW_COLUMNS = ("tok_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "peak_memory_gb")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark throughput, latency and start-up time")
    p.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="import bench/compile records (JSON) made on another machine",
    )
    p.add_argument("--db", type=Path, default=None, help=DB_HELP)
    benches = p.add_subparsers(dest="bench", metavar="BENCH")
    _add_throughput(benches)
    _add_startup(benches)
    _add_serve(benches)
    p.set_defaults(run=run)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="demo", help="checkpoint folder or 'demo'")
    p.add_argument("--json-out", type=Path, metavar="FILE", help="also write the record as JSON")
    # SUPPRESS: given after the bench name it sets args.db; absent, it keeps `kiln bench --db`.
    p.add_argument("--db", type=Path, default=argparse.SUPPRESS, help=DB_HELP)
    add_engine_arguments(p)


def _add_throughput(benches) -> None:
    p = benches.add_parser("throughput", help="tok/s, TTFT and ITL per batch size")
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated, e.g. 1,8,32")
    p.add_argument("--input-len", type=int, default=128, help="prompt tokens per request")
    p.add_argument("--output-len", type=int, default=128, help="generated tokens per request")
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompts")
    p.add_argument(
        "--vs",
        choices=["hf"],
        default=None,
        help="also run the baseline (HF transformers generate) on the same prompts",
    )
    _add_common(p)


def _add_startup(benches) -> None:
    p = benches.add_parser("startup", help="time `kiln generate` in fresh processes, by phase")
    p.add_argument("--runs", type=int, default=5, help="fresh processes to time (median kept)")
    p.add_argument(
        "--serve",
        action="store_true",
        help="time `kiln serve` instead: exec -> /health 200 -> one completion",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per process")
    _add_common(p)


def _add_serve(benches) -> None:
    p = benches.add_parser(
        "serve", help="streaming clients against `kiln serve`: tok/s, TTFT, ITL, E2E vs offline"
    )
    p.add_argument("--url", help="a running server (default: start `kiln serve MODEL` here)")
    p.add_argument("--served-model-name", help="the `model` to send (default: the server's)")
    p.add_argument("--api-key", default=None, help="bearer key of the server")
    p.add_argument("--concurrency", default="32", help="client counts, e.g. 32,128")
    p.add_argument(
        "--request-rate", help="Poisson request rates instead (req/s, 'inf': all at once)"
    )
    p.add_argument("--num-prompts", type=int, help="requests per load (default 4 x clients, 200)")
    p.add_argument("--input-len", type=int, default=128, help="random prompt tokens")
    p.add_argument("--output-len", type=int, default=64, help="generated tokens (EOS ignored)")
    p.add_argument("--prompts-file", type=Path, help="prompts, one per line (text or [ids])")
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompts")
    for name in ("ttft", "itl", "e2e"):
        p.add_argument(f"--slo-{name}-ms", type=float, help=f"goodput bound on {name.upper()}")
    p.add_argument(
        "--no-offline", action="store_true", help="skip the offline engine run at the same batch"
    )
    p.add_argument(
        "--client-procs",
        type=int,
        help="processes the clients run in (default: one per 16 in flight, up to cores - 1)",
    )
    p.add_argument(
        "--api-servers",
        type=int,
        default=1,
        help="the started server's API server processes (`kiln serve --api-servers`)",
    )
    _add_common(p)


def run(args: argparse.Namespace) -> int:
    if args.record is not None:
        if args.bench is not None:
            raise KilnError("--record imports a file; run it without a benchmark name")
        return _import_records(args.record, args.db)
    if args.bench == "throughput":
        return run_throughput(args)
    if args.bench == "startup":
        return run_startup(args)
    if args.bench == "serve":
        return run_serve(args)
    raise KilnError(
        "choose a benchmark (throughput, startup or serve), or import one with --record FILE"
    )


def _import_records(path: Path, db: Path | None) -> int:
    from perf_dashboard.store import DashboardStore

    store = DashboardStore(db)
    records = store.import_file(path)
    print(f"imported {len(records)} record(s) from {path} into {store.path}")
    return 0


def model_label(model: str) -> str:
    """'demo', or the checkpoint folder's name (checked to exist)."""
    from model_defs.registry import resolve_model_path

    return "demo" if model == "demo" else resolve_model_path(model).name


def engine_argv(args: argparse.Namespace) -> list[str]:
    """The engine flags of `args` that differ from their defaults, as command-line words."""
    probe = argparse.ArgumentParser(add_help=False)
    add_engine_arguments(probe)
    words: list[str] = []
    for action in probe._actions:
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        words += [flag] if switch else [flag, str(value)]
    return words


def finish(record, json_out: Path | None, db: Path | None) -> None:
    """Store the record in the dashboard and, if asked, write it as importable JSON."""
    from perf_dashboard.store import save_record

    if json_out is not None:
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(record.to_json(indent=2) + "\n")
        except OSError as e:
            raise KilnError(f"cannot write {json_out}: {e.strerror or e}") from None
    row_id = save_record(record, db)
    if row_id is not None:
        print(f"recorded as bench #{row_id} (see `kiln dashboard`)", file=sys.stderr)


def progress(total: int, desc: str):
    """A progress bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=None, leave=False)


# --- throughput -------------------------------------------------------------------------------
def run_throughput(args: argparse.Namespace) -> int:
    from kiln.benchmarking.workload import Workload, parse_batch_sizes

    workload = Workload(parse_batch_sizes(args.batch_sizes), args.input_len, args.output_len,
                        args.seed)  # fmt: skip
    rows = measure_throughput(args.model, workload, args.vs, engine_kwargs(args))
    print(throughput_table(rows))
    record = _bench_record("throughput", args.model, results=rows)
    finish(record, args.json_out, args.db)
    return 0


def measure_throughput(model: str, workload, vs: str | None, kw: dict) -> list[dict]:
    """Baseline first (it frees its memory before the engine sizes its KV cache), then Kiln."""
    import torch

    from kiln.benchmarking.hf_baseline import bench_hf
    from kiln.benchmarking.throughput import bench_kiln
    from kiln.config import EngineConfig, resolve_dtype
    from kiln.resolve import build_engine
    from model_defs.registry import read_config, resolve_model_path
    from runtime.startup import pick_device

    config = EngineConfig(model=model, **kw)
    path = resolve_model_path(model)
    _, cfg = read_config(path)
    device = pick_device(config)
    dtype = getattr(torch, resolve_dtype(config.dtype, device.type))
    n = len(workload.batch_sizes)
    hf_rows: list[dict] = []
    if vs == "hf":
        pad_id = cfg.eos_token_ids[0] if cfg.eos_token_ids else 0
        with progress(n, "hf") as bar:
            hf_rows = bench_hf(path, workload, cfg.vocab_size, dtype, device, pad_id, bar)
    engine = build_engine(config)
    with progress(n, "kiln") as bar:
        kiln_rows = bench_kiln(engine, workload, cfg.vocab_size, bar)
    return [
        r
        for pair in zip(kiln_rows, hf_rows or [None] * n, strict=True)
        for r in pair
        if r is not None
    ]


def throughput_table(rows: list[dict]) -> str:
    """One line per (batch size, engine); kiln lines carry tok/s relative to the baseline."""
    from kiln.benchmarking.stats import format_table

    base = {r["batch_size"]: r["tok_s"] for r in rows if r["engine"] != "kiln"}
    headers = ["batch", "engine", "in", "out", "tok/s", "vs hf", "TTFT p50 ms", "TTFT p99 ms",
               "ITL p50 ms", "ITL p99 ms", "peak GB"]  # fmt: skip
    table = []
    for r in rows:
        ratio = r["tok_s"] / base[r["batch_size"]] if r["engine"] == "kiln" and base else None
        ratio_text = f"{ratio:.2f}x" if ratio is not None else None
        table.append([r["batch_size"], r["engine"], r["input_len"], r["output_len"], r["tok_s"],
                      ratio_text, *(r[c] for c in ROW_COLUMNS[1:])])  # fmt: skip
    return format_table(headers, table)


# --- startup ----------------------------------------------------------------------------------
def run_startup(args: argparse.Namespace) -> int:
    from kiln.benchmarking.serve_startup import bench_serve_startup
    from kiln.benchmarking.startup import bench_startup, median_phases, median_weights
    from kiln.benchmarking.stats import median

    model_label(args.model)  # a bad folder fails here, not in the first child
    if args.model == "demo":
        from model_defs.registry import resolve_model_path

        resolve_model_path("demo")  # build it once, so no child pays for it
    bench = bench_serve_startup if args.serve else bench_startup
    with progress(args.runs, "startup") as bar:
        runs = bench(args.model, engine_argv(args), args.runs, args.timeout, bar)
    phases = median_phases(runs)
    total = median([r.total for r in runs])
    print(startup_table(phases, total, len(runs), serve=args.serve))
    print(ready_line(runs, args.serve))
    weights = median_weights(runs)
    if weights:
        print(weights_line(weights))
    cpu = median_cpu(runs)
    if cpu:
        print(cpu_line(cpu, runs))
    record = _bench_record("serve_startup" if args.serve else "startup", args.model,
                           startup=phases, startup_runs=[r.phases for r in runs],
                           weight_stream=weights, startup_cpu=cpu)  # fmt: skip
    finish(record, args.json_out, args.db)
    return 0


def ready_line(runs, serve: bool) -> str:
    """Medians of what a user waits for, with each run's figure."""
    from kiln.benchmarking.startup import ready_seconds
    from kiln.benchmarking.stats import median

    if serve:
        ready, first = [r.ready for r in runs], [r.total for r in runs]
        return (
            f"exec -> /health 200 {median(ready):.2f} s; exec -> first completion "
            f"{median(first):.2f} s (medians; each run: {' '.join(f'{s:.2f}' for s in first)})"
        )
    ready = median([ready_seconds(r) for r in runs])
    no_weights = [ready_seconds(r, without=("weights", "weights_wait")) for r in runs]
    return (
        f"start -> ready {ready:.2f} s; without the weight read {median(no_weights):.2f} s "
        f"(medians; each run: {' '.join(f'{s:.2f}' for s in no_weights)})"
    )


def median_cpu(runs) -> dict[str, float]:
    """Median CPU seconds per process over the runs that measured them."""
    from kiln.benchmarking.stats import median

    measured = [r.cpu for r in runs if r.cpu]
    return {name: median([c[name] for c in measured]) for name in measured[0]} if measured else {}


def cpu_line(cpu: dict[str, float], runs) -> str:
    """CPU seconds used by the first completion: the server's and its engine core's."""
    each = " ".join(f"{sum(r.cpu.values()):.2f}" for r in runs if r.cpu)
    return (
        f"cpu by the first completion: server {cpu['server']:.2f} s, engine core "
        f"{cpu['core']:.2f} s (medians; each run's sum: {each})"
    )


def weights_line(w: dict[str, float]) -> str:
    """The weight stream in one line (medians): bytes, threads, when, how fast."""
    size = f"{w.get('bytes', 0) / 1e9:.2f} GB"
    if not w.get("streamed"):
        return f"weights: {size} read by the plain loader in {w.get('copy_s', 0):.2f} s " \
               f"({w.get('copy_gbps', 0):.1f} GB/s)"  # fmt: skip
    return (
        f"weights: {size} streamed on {w.get('threads', 0):.0f} threads from "
        f"{w.get('start_s', 0):.2f} s to {w.get('done_s', 0):.2f} s after exec (plan "
        f"{w.get('plan_s', 0):.2f} s, driver + arena {w.get('setup_s', 0):.2f} s, copies "
        f"{w.get('copy_s', 0):.2f} s): {w.get('copy_gbps', 0):.1f} GB/s end to end, reads "
        f"{w.get('read_gbps', 0):.1f} GB/s, host-to-device {w.get('h2d_gbps', 0):.1f} GB/s"
    )


def startup_table(phases: dict[str, float], total: float, runs: int, serve: bool = False) -> str:
    from kiln.benchmarking.stats import format_table

    rows = [[name, s, f"{100 * s / total:.0f}%"] for name, s in phases.items()]
    rows.append([f"total (median of {runs})", total, "100%"])
    if not serve:  # what a user waits for: the process start to the first token (exit excluded)
        to_first = total - phases.get("exit", 0.0)
        rows.append(["start -> first token", to_first, f"{100 * to_first / total:.0f}%"])
    return format_table(["phase", "median s", "share"], rows)


def _bench_record(bench: str, model: str, **fields):
    from kiln.benchmarking.stats import card_name
    from perf_dashboard.records import BenchRecord

    return BenchRecord(bench=bench, model=model_label(model), card=card_name(), **fields)


# --- serve ------------------------------------------------------------------------------------
def run_serve(args: argparse.Namespace) -> int:
    from kiln.benchmarking.serve import ServeBench, Slo, parse_loads, run_bench
    from model_defs.registry import read_config, resolve_model_path

    cfg = ServeBench(
        model=args.model, url=args.url, loads=parse_loads(args.concurrency, args.request_rate),
        input_len=args.input_len, output_len=args.output_len, num_prompts=args.num_prompts,
        prompts_file=args.prompts_file, slo=Slo(args.slo_ttft_ms, args.slo_itl_ms, args.slo_e2e_ms),
        offline=not args.no_offline, seed=args.seed, api_key=args.api_key,
        served_name=args.served_model_name, client_procs=args.client_procs,
        api_servers=args.api_servers,
    )  # fmt: skip
    _, model_cfg = read_config(resolve_model_path(args.model))
    rows, errors = run_bench(cfg, engine_argv(args), model_cfg.vocab_size)
    print(serve_table(rows))
    finish(_bench_record("serve", args.model, results=rows), args.json_out, args.db)
    return 1 if errors else 0


def serve_table(rows: list[dict]) -> str:
    """One line per load and engine; served lines carry their ratio to offline."""
    from kiln.benchmarking.stats import format_table

    headers = ["load", "engine", "tok/s", "vs offline", "TTFT p50", "TTFT p99", "ITL p50",
               "ITL p99", "E2E p50", "E2E p99", "goodput req/s"]  # fmt: skip
    table = []
    for r in rows:
        rate = r.get("request_rate")
        load = f"{rate:g} req/s" if rate is not None else f"{r['batch_size']} clients"
        ratio = r.get("served_ratio")
        engine = r["engine"]
        if (r.get("api_servers") or 1) > 1:
            engine += f" ({r['api_servers']} API servers)"
        table.append([load, engine, r["tok_s"], f"{ratio:.0%}" if ratio else None,
                      r["ttft_p50_ms"], r["ttft_p99_ms"], r["itl_p50_ms"], r["itl_p99_ms"],
                      r.get("e2e_p50_ms"), r.get("e2e_p99_ms"), r.get("goodput_req_s")])  # fmt: skip
    notes = [_serve_note(r) for r in rows if r["engine"] == "kiln-serve"]
    return "\n".join([format_table(headers, table), "(latencies in ms)", *filter(None, notes)])


def _serve_note(r: dict) -> str | None:
    """The served row against its goals: TTFT p50 / offline TTFT p50, ITL p99 / ITL p50."""
    parts = []
    if r.get("ttft_p50_over_offline") is not None:
        parts.append(f"TTFT p50 {r['ttft_p50_over_offline']:.2f}x offline")
    if r.get("itl_p99_over_p50") is not None:
        parts.append(f"ITL p99 {r['itl_p99_over_p50']:.2f}x ITL p50")
    if not parts:
        return None
    rate = r.get("request_rate")
    load = f"{rate:g} req/s" if rate is not None else f"{r['batch_size']} clients"
    return f"{load}: " + ", ".join(parts)
