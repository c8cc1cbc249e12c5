"""`kiln serve [MODEL|ARTIFACT]`: the OpenAI-compatible HTTP server.

Starts the engine-core process (forked while this one is torch-free, see `spawn_core`), which
builds the engine (`build_core_engine`: compiles on a cache miss, loads on a hit; ready before
its step CUDA graphs are captured), then serves from this process until SIGTERM or Ctrl-C,
draining in-flight requests for up to `--shutdown-timeout` seconds. If the engine process dies,
the server exits with code 1. With KILN_STARTUP_REPORT set, it writes its start-up report
there once it listens (`kiln bench startup --serve` reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from kiln import env, startup
from kiln.commands.flags import add_engine_arguments, engine_kwargs
from kiln.errors import KilnError


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument(
        "model",
        nargs="?",
        default="demo",
        help="checkpoint folder, compiled artifact, or 'demo' (default)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks one)")
    p.add_argument(
        "--api-key",
        default=None,
        help="require `Authorization: Bearer KEY` on /v1/* (or set KILN_API_KEY)",
    )
    p.add_argument(
        "--served-model-name",
        action="append",
        default=None,
        help="name clients use for the model (repeatable; default: the model's)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=1024,
        help="waiting + running requests before answering 503 (default 1024)",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=4.0,
        help="largest request body in MiB; larger get 413 (default 4)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        help="seconds in-flight requests may finish after SIGTERM (default 10)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--engine-threads",
        type=int,
        default=None,
        help="CPU threads of the engine-core process (default: all cores but one, which the "
        "API server keeps; at least 1)",
    )
    p.add_argument(
        "--api-servers",
        type=int,
        default=1,
        help="API server processes sharing the port in front of the one engine (default 1); "
        "a small model on a fast GPU streams more tokens than one process can write",
    )
    add_engine_arguments(p)
    p.set_defaults(compile="on_miss")  # serve compiles on a cache miss, loads on a hit
    p.set_defaults(run=run)


def server_config(args: argparse.Namespace):
    from server.config import ServerConfig

    return ServerConfig(
        served_model_names=tuple(args.served_model_name or ()),
        api_key=args.api_key or env.api_key(),
        max_queue=args.max_queue,
        max_body_bytes=int(args.max_body_mb * 2**20),
        shutdown_timeout=args.shutdown_timeout,
        step_trace=env.step_trace_path(),
    )


def run(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = server_config(args)  # bad flags fail before the (slow) engine build
    if args.engine_threads is not None and args.engine_threads < 1:
        raise KilnError(f"--engine-threads {args.engine_threads} must be >= 1")
    count = args.api_servers
    check_api_servers(count)

    from runtime.engine_core import spawn_core

    # Until the server's event loop takes SIGTERM over, it stops the start-up: the core and
    # any other API server are killed (serve_core), none is left behind building an engine.
    # Held (blocked) until serve_core can clean up; the core ignores it, the other API
    # servers hold it until their own loop drains.
    signal.signal(signal.SIGTERM, _stop_starting)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    # The core first: the server's own imports (aiohttp, ~0.4 s) happen while it starts.
    t_spawn = time.time()
    spawned = spawn_core(build_core_engine, args, fork=env.core_fork_enabled(), frontends=count,
                         max_queue=args.max_queue)  # fmt: skip
    from server.launch import serve_core

    def connected(core) -> None:
        marks.setdefault("t_core_ready", time.time())
        startup.resume_gc()
        startup.serve_gc()

    def ready(url: str, core) -> None:
        names = ", ".join(config.served_model_names or (core.info.model_name,))
        log = logging.getLogger("kiln.server")
        log.info("serving %s; %s", names, core.info.description)
        others = [p.pid for p in core.others.processes] if core.others is not None else []
        log.info("processes: API server 0 pid %d, engine core pid %d%s", os.getpid(),
                 core.process.pid, f", API servers 1.. pids {others}" if others else "")  # fmt: skip
        print(f"kiln serve: listening on {url}", flush=True)
        report = env.startup_report_path()
        if report is not None:
            marks.update(t_process_start=startup.PROCESS_START, t_listening=time.time())
            report.write_text(json.dumps({"marks": marks, "core": core.info.startup}))

    marks = {"t_core_spawn": t_spawn}
    return serve_core(spawned, config, args.host, args.port, on_connect=connected,
                      on_ready=ready)  # fmt: skip


MAX_API_SERVERS = 64


def _stop_starting(signum, frame) -> None:
    os.write(2, b"kiln serve: stopped by SIGTERM before it was ready\n")  # no stream lock
    raise SystemExit(128 + signum)


def check_api_servers(count: int) -> None:
    if not 1 <= count <= MAX_API_SERVERS:
        raise KilnError(f"--api-servers {count} must be between 1 and {MAX_API_SERVERS}")
    if count > 1 and (not hasattr(os, "pidfd_open") or "torch" in sys.modules):
        raise KilnError(f"--api-servers {count} needs Linux (a pidfd, and fork); use 1")


def build_core_engine(args: argparse.Namespace):
    """The engine `kiln serve` runs; called in the engine-core process (so it must stay a
    module-level function of picklable `args`)."""
    # A spawned core never ran `kiln.cli.main`, which pauses the collector (a forked one
    # inherits the pause): pause it here, before torch's import, which it slows by walking
    # torch's objects again and again.
    startup.pause_gc()
    startup.head_start(args.model, args.device)  # before torch: the weights stream meanwhile
    from ir.host_triton import permit_host_only

    permit_host_only()  # this process runs one engine: a plan's kernels need no Triton here
    import torch

    from kiln.config import EngineConfig
    from kiln.resolve import build_engine

    # Intra-op threads that outnumber the free cores wait on each other at every op's barrier
    # whenever the server process runs: on a 2-core host that cost 5-10x in step time.
    torch.set_num_threads(args.engine_threads or max(1, (os.cpu_count() or 2) - 1))
    t_load_start = time.time()
    config = EngineConfig(model=args.model, **engine_kwargs(args))
    # Ready before the step graphs: the core captures them after its first step's outputs
    # are sent (or once idle), so /health and a first prefill do not wait for them.
    engine = build_engine(config, defer_graph_capture=env.graphs_after_ready(), serving=True)
    engine.loaded.marks.update(t_process_start=startup.PROCESS_START, t_load_start=t_load_start)
    startup.resume_gc()
    startup.serve_gc()
    return engine
