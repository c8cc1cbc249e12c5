"""What `kiln serve`'s two processes import before the engine core's torch import: the API
server process up to spawning the core, and the core up to building its engine."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from kiln import startup


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("fork_setting, fork", [(None, True), ("0", False)])
def test_kiln_serve_spawns_its_core_before_importing_other_commands_or_asyncio(
    monkeypatch, fork_setting, fork
):
    """Up to `spawn_core`, `kiln serve` parses with serve's parser alone and imports neither
    asyncio, the server, nor torch: the core starts as early as it can, and (unless
    KILN_CORE_FORK=0) forked, so it inherits these modules instead of importing them again."""
    if fork_setting is None:
        monkeypatch.delenv("KILN_CORE_FORK", raising=False)
    else:
        monkeypatch.setenv("KILN_CORE_FORK", fork_setting)
    code = (
        "import sys, runtime.engine_core as ec\n"
        "def spawn(build, arg, *, fork, **kw):\n"
        "    watched = ('asyncio', 'aiohttp', 'server', 'torch')\n"
        "    print(fork, sorted(m for m in sys.modules if m.split('.')[0] in watched\n"
        "                       or m.startswith('kiln.commands.')))\n"
        "    raise SystemExit(0)\n"
        "ec.spawn_core = spawn\n"
        "from kiln.cli import main\n"
        "main(['serve', 'demo'])\n"
    )
    loaded = _run(code)
    assert loaded == f"{fork} " + str(["kiln.commands.flags", "kiln.commands.serve",
                                       "server", "server.config"]), loaded  # fmt: skip


def test_the_engine_core_reaches_its_build_without_server_or_cli_modules():
    """The core process imports the modules its target and argument unpickle to (engine_core,
    kiln.commands.serve) and kiln.cli as `__mp_main__`; none of them may pull in the server,
    aiohttp, asyncio, torch or another command."""
    code = (
        "import sys, pickle, argparse\n"
        "import kiln.cli\n"  # what `python -m kiln`'s spawned child imports as __mp_main__
        "from kiln.commands.serve import build_core_engine\n"
        "from runtime.engine_core import run_core\n"
        "watched = ('asyncio', 'aiohttp', 'server', 'torch', 'transformers', 'sympy')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in watched\n"
        "             or (m.startswith('kiln.commands.') and m not in\n"
        "                 ('kiln.commands.serve', 'kiln.commands.flags'))))\n"
    )
    assert _run(code) == "[]"


def test_the_engine_core_pauses_the_collector_before_importing_torch(monkeypatch):
    """The core never runs `kiln.cli.main`, so `build_core_engine` pauses the cyclic collector
    itself, before the head start and torch's import."""
    from kiln.cli import build_parser
    from kiln.commands import serve

    seen = []

    class Stop(Exception):
        pass

    def head_start(model, device):
        seen.append(gc.isenabled())
        raise Stop

    monkeypatch.setattr(startup, "head_start", head_start)
    args = build_parser().parse_args(["serve", "demo"])
    assert gc.isenabled()
    try:
        with pytest.raises(Stop):
            serve.build_core_engine(args)
    finally:
        startup.resume_gc(freeze=False)
    assert seen == [False]
    assert gc.isenabled()


def test_a_named_command_gets_its_parser_alone_and_anything_else_every_parser():
    from kiln.cli import COMMANDS, build_parser, command_of

    assert command_of(["serve", "demo", "--port", "0"]) == "serve"
    assert command_of(["--help"]) is None
    assert command_of(["servee"]) is None
    assert command_of([]) is None
    choices = lambda parser: list(parser._subparsers._group_actions[0].choices)  # noqa: E731
    assert choices(build_parser("serve")) == ["serve"]
    assert choices(build_parser()) == list(COMMANDS)


@pytest.mark.parametrize("setting, deferred", [(None, True), ("0", False)])
def test_the_engine_core_captures_its_graphs_after_ready_unless_told_not_to(
    monkeypatch, setting, deferred
):
    """`build_core_engine` asks for a serving load that leaves the step CUDA graphs for after
    ready; KILN_GRAPHS_AFTER_READY=0 has them captured in the load, as before. It permits
    host-only kernels (restored here: the permission lasts as long as the process)."""
    import torch

    from ir import host_triton
    from kiln import resolve
    from kiln.cli import build_parser
    from kiln.commands import serve

    if setting is None:
        monkeypatch.delenv("KILN_GRAPHS_AFTER_READY", raising=False)
    else:
        monkeypatch.setenv("KILN_GRAPHS_AFTER_READY", setting)
    monkeypatch.setattr(host_triton, "_permitted", False)
    seen = []

    class Stop(Exception):
        pass

    def build_engine(config, *, defer_graph_capture, serving):
        seen.append((defer_graph_capture, serving, host_triton._permitted))
        raise Stop

    monkeypatch.setattr(startup, "head_start", lambda model, device: None)
    monkeypatch.setattr(resolve, "build_engine", build_engine)
    args = build_parser("serve").parse_args(["serve", "demo"])
    threads = torch.get_num_threads()
    try:
        with pytest.raises(Stop):
            serve.build_core_engine(args)
    finally:
        startup.resume_gc(freeze=False)
        torch.set_num_threads(threads)
    assert seen == [(deferred, True, True)]
