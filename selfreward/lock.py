"""One writer per directory: an exclusive `flock` on DIR/.lock, which holds the writer's pid.

The kernel drops the lock when its holder exits or is killed, so a lock left by a dead
process never blocks a resume; the stale pid in the file is simply overwritten.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from selfreward.errors import SelfRewardError

LOCK_NAME = ".lock"


def _open_locked(path: Path) -> IO[str] | None:
    """`path` opened and exclusively locked, or None when another process holds it."""
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the lock's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _is_current(handle: IO[str], path: Path) -> bool:
    """Whether `handle` is still the file at `path` (a previous holder may have removed it)."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), path.stat())
    except FileNotFoundError:
        return False


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pid = ""
    return f"pid {pid}" if pid else "a process that is starting"


@contextmanager
def hold_lock(directory: Path) -> Iterator[None]:
    """Be the only writer of `directory` (created if missing) until the block ends.

    Another holder => SelfRewardError naming its pid. A directory this call created and that
    holds nothing but the lock at the end (the command failed before writing) is removed again.
    """
    directory = Path(directory)
    created = not directory.exists()
    path = directory / LOCK_NAME
    while True:
        directory.mkdir(parents=True, exist_ok=True)
        handle = _open_locked(path)
        if handle is None:
            raise SelfRewardError(f"{directory} is in use by another selfreward process ({_holder(path)}); wait for it to finish or stop it")
        if _is_current(handle, path):
            break
        handle.close()  # the previous holder removed the file before we locked it: lock a new one
    try:
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        if created and [p.name for p in directory.iterdir()] == [LOCK_NAME]:
            path.unlink()
            directory.rmdir()
        handle.close()
