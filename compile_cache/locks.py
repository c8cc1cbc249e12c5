"""Inter-process locks, one per cache key, so two processes compiling one key build it once.

`fcntl.flock` locks belong to an open file and vanish when its process dies, so a killed
compile never leaves a key locked. Lock files are never deleted: unlinking one while another
process waits on it would let a third lock a fresh file beside it.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def key_lock(lock_dir: Path, key: str) -> Iterator[None]:
    """Hold the exclusive lock for `key`, waiting (and saying so) while another process has it."""
    fd = _open(lock_dir, key)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process to finish building %s", key[:12])
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def try_key_lock(lock_dir: Path, key: str) -> Iterator[bool]:
    """Take the lock for `key` if free; yields False (holding nothing) if someone builds it."""
    fd = _open(lock_dir, key)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _open(lock_dir: Path, key: str) -> int:
    lock_dir.mkdir(parents=True, exist_ok=True)
    return os.open(lock_dir / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
