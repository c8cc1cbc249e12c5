"""Where served token latency goes: the client's per-chunk timestamps joined to the core's steps.

    python benchmarks/serve_profile.py --concurrency 32 --input-len 128 --output-len 64
    python benchmarks/serve_profile.py --json out.json -- --max-prefill-while-decoding 512

Starts `kiln serve MODEL` with `KILN_STEP_TRACE` (one line per engine step: when the core ran
it, its decodes and prefill tokens, when the server read it, the requests it advanced), runs
N streaming clients (`kiln bench serve`'s client processes and workload), stops the server and joins
the two on the host's monotonic clock. The server sends one chunk per step per request, so
chunk k of a request comes from the k-th step that advanced it. Each client ITL splits into

    engine gap (step k's end - step k-1's end) + change in delivery delay (chunk time - step end)

and a TTFT into queueing + prefill in the core (send -> end of the request's first step) and
delivery (that step's end -> the first chunk). Steps are binned by their prefill tokens, so
a tail that comes from prefills sharing steps with decodes shows as slow steps with prefill.
Arguments after `--` go to `kiln serve` (engine flags).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from kiln.benchmarking.serve import (  # noqa: E402
    COMPLETIONS,
    default_client_procs,
    load_prompts,
    request_body,
    start_server,
    stop_server,
)
from kiln.benchmarking.serve_client import ClientPool, Sample, split_clients  # noqa: E402
from kiln.benchmarking.stats import percentile  # noqa: E402

PREFILL_BINS = ((0, 0), (1, 128), (129, 256), (257, 512), (513, 1 << 30))


def ms_stats(values: list[float]) -> dict:
    return {
        "n": len(values),
        **{f"p{q}_ms": _ms(percentile(values, q)) for q in (50, 90, 99)},
        "mean_ms": _ms(sum(values) / len(values)) if values else None,
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def read_trace(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step_bins(steps: list[dict]) -> list[dict]:
    """Step duration by how many prefill tokens the step carried."""
    rows = []
    for lo, hi in PREFILL_BINS:
        picked = [s for s in steps if lo <= s["prefill"] <= hi]
        if picked:
            durations = [s["ended"] - s["started"] for s in picked]
            decodes = [s["decodes"] for s in picked]
            rows.append({"prefill_tokens": f"{lo}-{hi}", "decodes_mean": sum(decodes) / len(decodes),
                         **ms_stats(durations)})  # fmt: skip
    return rows


def join(samples: list[Sample], steps: list[dict]) -> dict:
    """Split each client ITL and TTFT into engine time and delivery time."""
    ends = [s["ended"] for s in steps]  # steps arrive in order
    cum = [0]
    for s in steps:
        cum.append(cum[-1] + s["prefill"])
    by_id: dict[str, list[dict]] = {}
    for s in steps:
        for rid in s["ids"]:
            by_id.setdefault(rid, []).append(s)
    itl, engine_gap, delivery, core_to_server, server_to_client = [], [], [], [], []
    ttft, ttft_engine, ttft_delivery, mismatched = [], [], [], 0
    gaps: list[
        tuple[float, float, float, int]
    ] = []  # (client gap, engine gap, delivery change, prefill)
    for smp in (s for s in samples if s.ok and s.stamps):
        mine = by_id.get(smp.response_id + "-0", [])
        if len(mine) != len(smp.stamps):
            mismatched += 1  # a step without a chunk (or the reverse): not one chunk per step
            continue
        ttft.append(smp.stamps[0] - smp.sent)
        ttft_engine.append(mine[0]["ended"] - smp.sent)
        ttft_delivery.append(smp.stamps[0] - mine[0]["ended"])
        for k, (stamp, step) in enumerate(zip(smp.stamps, mine)):
            delivery.append(stamp - step["ended"])
            core_to_server.append(step["received"] - step["ended"])
            server_to_client.append(stamp - step["received"])
            if k == 0:
                continue
            prev_stamp, prev = smp.stamps[k - 1], mine[k - 1]
            gap, eng = stamp - prev_stamp, step["ended"] - prev["ended"]
            itl.append(gap)
            engine_gap.append(eng)
            lo, hi = (
                bisect.bisect_right(ends, prev["ended"]),
                bisect.bisect_right(ends, step["ended"]),
            )
            prefill = cum[hi] - cum[lo]  # prefill tokens of the steps in this gap
            gaps.append((gap, eng, gap - eng, prefill))
    return {
        "requests_joined": len(ttft),
        "requests_mismatched": mismatched,
        "client_itl": ms_stats(itl),
        "engine_gap": ms_stats(engine_gap),
        "delivery_delay": ms_stats(delivery),
        "core_to_server": ms_stats(core_to_server),
        "server_to_client": ms_stats(server_to_client),
        "client_ttft": ms_stats(ttft),
        "ttft_in_core": ms_stats(ttft_engine),
        "ttft_delivery": ms_stats(ttft_delivery),
        "itl_tail": tail(gaps, percentile(itl, 50)),
    }


def tail(gaps: list[tuple[float, float, float, int]], p50: float | None) -> dict:
    """The ITLs over 2x the median: how much of each is engine gap, and what the steps held."""
    if p50 is None:
        return {}
    slow = [g for g in gaps if g[0] > 2 * p50]
    if not slow:
        return {"count": 0, "share": 0.0}
    return {
        "count": len(slow),
        "share": len(slow) / len(gaps),
        "engine_gap_share": sum(g[1] for g in slow) / sum(g[0] for g in slow),
        "with_prefill_share": sum(g[3] > 0 for g in slow) / len(slow),
        "engine_gap_over_2x_share": sum(g[1] > 2 * p50 for g in slow) / len(slow),
        "prefill_tokens_p50": percentile([g[3] for g in slow], 50),
        "delivery_change": ms_stats([g[2] for g in slow]),
    }


def profile(args: argparse.Namespace, serve_argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "steps.jsonl"
        env = {**os.environ, "KILN_STEP_TRACE": str(trace)}
        proc, url = start_server(args.model, serve_argv, 4096, env)
        try:
            samples = _load(args, url)
        finally:
            stop_server(proc)
        steps = read_trace(trace)
    good = [s for s in samples if s.ok and s.stamps]
    first, last = min(s.sent for s in good), max(s.stamps[-1] for s in good)
    steps = [s for s in steps if s["started"] >= first]  # the warm-up's steps come first
    busy = sum(s["ended"] - s["started"] for s in steps)
    return {
        "model": args.model, "concurrency": args.concurrency, "input_len": args.input_len,
        "output_len": args.output_len, "serve_argv": serve_argv,
        "client_procs": args.client_procs, "loadavg": os.getloadavg(), "errors": sum(not s.ok for s in samples),
        "tok_s": sum(len(s.stamps) for s in good) / (last - first), "wall_s": last - first,
        "engine_busy_s": busy, "steps": len(steps), "step_by_prefill": step_bins(steps),
        **join(samples, steps),
    }  # fmt: skip


def _load(args: argparse.Namespace, url: str) -> list[Sample]:
    """`kiln bench serve`'s closed loop over its client processes, after a warm-up request
    from each process."""
    from kiln.benchmarking.serve import _first_model

    model = asyncio.run(_first_model(url, {}))
    vocab = args.vocab_size
    with ClientPool(args.client_procs, url + COMPLETIONS, {}) as pool:
        n = max(8, len(pool))
        warm = load_prompts(None, n, args.input_len, vocab, 7919)
        pool.run(split_clients([request_body(model, p, 4) for p in warm], n, len(pool)))
        prompts = load_prompts(None, args.num_prompts, args.input_len, vocab, 0)
        bodies = [request_body(model, p, args.output_len) for p in prompts]
        return pool.run(split_clients(bodies, args.concurrency, len(pool)))


def main() -> int:
    argv = sys.argv[1:]
    serve_argv = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--num-prompts", type=int, help="default 4 x concurrency")
    p.add_argument(
        "--client-procs",
        type=int,
        help="client processes (default: kiln bench serve's, one per 16 clients)",
    )
    p.add_argument("--json", type=Path, help="write the profile here")
    args = p.parse_args(argv)
    args.num_prompts = args.num_prompts or 4 * args.concurrency
    args.client_procs = args.client_procs or default_client_procs(
        min(args.concurrency, args.num_prompts)
    )
    from model_defs.registry import read_config, resolve_model_path

    args.vocab_size = read_config(resolve_model_path(args.model))[1].vocab_size
    result = profile(args, serve_argv)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
