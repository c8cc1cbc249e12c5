"""Compile progress: plain lines off a terminal, a tqdm bar on one."""

from __future__ import annotations

import io

from lowering.progress import CompileProgress, as_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_off_a_terminal_name_each_phase_and_piece():
    lines, phases = [], {}
    progress = CompileProgress(lines.append, io.StringIO())
    with progress.phase("lower", phases):
        with progress.pieces(2, "compile pieces") as tick:
            tick("layer x15", 1.5)
            tick("prologue", 0.25)
    assert lines == [
        "[kiln compile] lower ...",
        "[kiln compile] compile pieces: 1/2 layer x15 in 1.50s",
        "[kiln compile] compile pieces: 2/2 prologue in 0.25s",
        f"[kiln compile] lower done in {phases['lower']:.2f}s",
    ]


def test_a_terminal_gets_a_bar_and_no_piece_lines():
    lines, stream = [], _Terminal()
    progress = CompileProgress(lines.append, stream)
    with progress.pieces(3, "compile pieces") as tick:
        for name in ("a", "b", "c"):
            tick(name, 0.1)
    assert not any("compile pieces" in line for line in lines)
    assert "3/3" in stream.getvalue() and "compile pieces" in stream.getvalue()


def test_a_plain_callable_becomes_line_progress():
    lines = []
    progress = as_progress(lines.append)
    progress("hello")
    assert lines == ["hello"] and not progress.bars
