"""One writer per directory: an exclusive `flock` on DIR/.lock, which holds the writer's pid.

The kernel drops the lock when its holder exits or is killed, so a lock left by a dead
process never blocks a resume; the stale pid in the file is simply overwritten.

The lock file is opened without following links (O_NOFOLLOW) and must be a regular file with no
other name: a `.lock` that is a symlink or a hard link to some other file (on a shared filesystem,
another user's) is refused, never truncated. A command that ends with an error removes the lock
file it created.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selfreward.errors import SelfRewardError

LOCK_NAME = ".lock"
OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""Never through a link; O_NONBLOCK so a FIFO planted at the path cannot block the open."""


def _make_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise SelfRewardError(f"{directory} is not a directory: give a directory for the command's output")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SelfRewardError(f"cannot create the directory {directory}: a file is in the way") from None


def _not_a_lock_file(path: Path, what: str) -> SelfRewardError:
    advice = "selfreward will not write through it: remove it and run the command again"
    return SelfRewardError(f"{path} is {what}, not a lock file; {advice}")


def _open_lock_file(path: Path) -> tuple[int, bool] | None:
    """(descriptor, whether this call created the file), or None when the file vanished meanwhile."""
    try:
        return os.open(path, OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o666), True
    except FileExistsError:
        pass  # O_EXCL never follows a link: an existing path, link or not, is opened below
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_a_lock_file(path, "a symbolic link") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):
            raise _not_a_lock_file(path, "a directory or a socket") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        regular = stat.S_ISREG(info.st_mode)
        raise _not_a_lock_file(path, "a hard link to another file" if regular else "not a regular file")
    return fd, False


def _is_current(fd: int, path: Path) -> bool:
    """Whether `fd` is still the file at `path` (a previous holder may have removed it)."""
    try:
        return os.path.samestat(os.fstat(fd), path.lstat())
    except FileNotFoundError:
        return False


def _holder(fd: int) -> str:
    pid = os.pread(fd, 32, 0).decode("utf-8", errors="replace").strip()
    return f"pid {pid}" if pid.isdigit() else "a process that is starting"


def _acquire(directory: Path, path: Path) -> tuple[int, bool]:
    """The locked lock file's descriptor and whether this call created the file."""
    while True:
        _make_directory(directory)
        opened = _open_lock_file(path)
        if opened is None:
            continue
        fd, created = opened
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            in_use = f"{directory} is in use by another selfreward process ({holder})"
            raise SelfRewardError(f"{in_use}; wait for it to finish or stop it") from None
        if _is_current(fd, path):
            return fd, created
        os.close(fd)  # the previous holder removed the file before we locked it: lock a new one


@contextmanager
def hold_lock(directory: Path) -> Iterator[None]:
    """Be the only writer of `directory` (created if missing) until the block ends.

    Another holder => SelfRewardError naming its pid. A block that raises removes the lock file
    if this call created it; a directory this call created and that holds nothing but the lock
    at the end (the command failed before writing) is removed again."""
    directory = Path(directory)
    created_directory = not directory.exists()
    path = directory / LOCK_NAME
    fd, created = _acquire(directory, path)
    finished = False
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
        finished = True
    finally:
        only_the_lock = created_directory and [p.name for p in directory.iterdir()] == [LOCK_NAME]
        if created and (not finished or only_the_lock):
            path.unlink(missing_ok=True)  # unlinked while still locked: a waiting opener sees it is not current
        if created_directory and not any(directory.iterdir()):
            directory.rmdir()
        os.close(fd)
