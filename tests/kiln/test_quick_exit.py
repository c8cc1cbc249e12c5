"""`kiln compile` run as a program ends through `quick_exit`: its exit handlers still run, its
output is still flushed and its exit code kept; only the interpreter's teardown is skipped.
Called with an argv (as these tests call every verb), `main` returns instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)


def test_quick_exit_runs_the_exit_handlers_and_flushes_the_output():
    proc = run(
        "import atexit, sys\n"
        "from kiln.cli import quick_exit\n"
        "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
        "print('buffered, no newline', end='')\n"
        "quick_exit(3)\n"
        "print('not reached')\n"
    )
    assert proc.returncode == 3
    assert proc.stdout == "buffered, no newline" and "handler ran" in proc.stderr


def test_a_failing_compile_keeps_its_exit_code_and_message(tmp_path):
    proc = run(
        "import sys\n"
        "from kiln.cli import main\n"
        f"sys.argv = ['kiln', 'compile', {str(tmp_path / 'none')!r}, '--target', 'cpu']\n"
        "main()\n"
        "print('not reached')\n"
    )
    assert proc.returncode == 2, proc.stderr
    assert "kiln compile: error:" in proc.stderr and "not reached" not in proc.stdout
