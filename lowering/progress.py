"""Telling a person what a compile is doing: its phases, and the pieces of the lowering.

On a terminal the pieces advance a tqdm bar; otherwise (a log, a pipe, a test) every event
is one plain line, so a CI log shows which piece took how long.

    progress = CompileProgress(lambda m: print(m, file=sys.stderr), sys.stderr)
    with progress.phase("lower", phases):
        with progress.pieces(3, "compile pieces") as tick:
            tick("layer (x30)", 4.2)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

PREFIX = "[kiln compile]"


class CompileProgress:
    """Phases and pieces of one compile, as lines through `say` and a bar on `stream`."""

    def __init__(self, say: Callable[[str], None] = print, stream: TextIO | None = None):
        self.say = say
        self.stream = stream
        isatty = getattr(stream, "isatty", None)
        self.bars = bool(isatty and isatty())

    def __call__(self, message: str) -> None:
        """A free-form line (cache miss explanations and the like)."""
        self.say(message)

    @contextmanager
    def phase(self, name: str, phases: dict[str, float]) -> Iterator[None]:
        """Time phase `name` into `phases` and report its start and end."""
        self.say(f"{PREFIX} {name} ...")
        start = time.perf_counter()
        yield
        phases[name] = time.perf_counter() - start
        self.say(f"{PREFIX} {name} done in {phases[name]:.2f}s")

    @contextmanager
    def pieces(self, total: int, desc: str) -> Iterator[Callable[[str, float], None]]:
        """Yields `tick(label, seconds)`, called once per finished piece (any order)."""
        bar = self._bar(total, desc)
        done = 0

        def tick(label: str, seconds: float) -> None:
            nonlocal done
            done += 1
            if bar is not None:
                bar.set_postfix_str(f"{label} {seconds:.1f}s", refresh=False)
                bar.update(1)
            else:
                self.say(f"{PREFIX} {desc}: {done}/{total} {label} in {seconds:.2f}s")

        try:
            yield tick
        finally:
            if bar is not None:
                bar.close()

    def _bar(self, total: int, desc: str):
        if not self.bars:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"{PREFIX} {desc}", file=self.stream, unit="piece")


def as_progress(progress: Callable[[str], None] | CompileProgress) -> CompileProgress:
    """A plain message callable (print, a logger) becomes a line-only CompileProgress."""
    return progress if isinstance(progress, CompileProgress) else CompileProgress(progress)
