"""Plain artifacts on disk: JSONL records, atomic writes, and per-stage progress files.

A stage appends finished records to `NAME.jsonl.partial` one batch at a time, each batch closed
by a `{"_batch_end": true}` line and fsynced; then it writes `NAME.jsonl` and `NAME.stats.json`
(the stats file marks the stage done). A batch cut short by a kill lacks its closing line: on
resume its surviving rows are dropped and the whole batch is made again, never duplicated.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

UMASK = os.umask(0)
os.umask(UMASK)
BATCH_END = {"_batch_end": True}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a finished JSONL file (in-progress `.partial` files are read with `read_committed`)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when the file does not exist (yet)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """OSErrors raised while writing `path` carry its name (a failed write() or fsync() names none)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def write_atomic(path: Path, text: str) -> None:
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp creates 0600; artifacts get the usual permissions
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, jsonl_text(rows))


def batch_text(rows: list[dict[str, Any]]) -> str:
    """Rows as one batch of a partial file: the rows, then the line that closes the batch."""
    return jsonl_text([*rows, BATCH_END]) if rows else ""


def read_committed(path: Path) -> list[dict[str, Any]]:
    """Rows of the whole batches of a partial file; rows after the last closing line (a batch
    cut by a kill, whose last line may be cut short too) are left out."""
    committed: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    text = path.read_text(encoding="utf-8", errors="replace")  # a cut may split a multi-byte character
    for line in text.split("\n"):  # not splitlines: texts may hold U+2028
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # appends only ever cut the last line
        if row == BATCH_END:
            committed += pending
            pending = []
        else:
            pending.append(row)
    return committed


class StageFiles:
    """The output files of one stage in a directory: records, in-progress records, stats."""

    def __init__(self, directory: Path, name: str):
        self.directory = Path(directory)
        self.name = name
        self.records = self.directory / f"{name}.jsonl"
        self.partial = self.directory / f"{name}.jsonl.partial"
        self.stats = self.directory / f"{name}.stats.json"

    def done(self) -> bool:
        return self.stats.exists()

    def load_progress(self) -> list[dict[str, Any]]:
        """Records finished by an earlier, interrupted attempt (none when starting fresh)."""
        if self.records.exists():
            return read_jsonl(self.records)
        if self.partial.exists():
            rows = read_committed(self.partial)
            write_atomic(self.partial, batch_text(rows))  # drop a cut batch before appending again
            return rows
        return []

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with naming(self.partial), open(self.partial, "a", encoding="utf-8") as handle:
            handle.write(batch_text(rows))
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self, rows: list[dict[str, Any]], stats: dict[str, Any]) -> None:
        write_jsonl(self.records, rows)
        self.partial.unlink(missing_ok=True)
        write_json(self.stats, stats)

    def read(self) -> list[dict[str, Any]]:
        return read_jsonl(self.records)

    def read_stats(self) -> dict[str, Any]:
        return json.loads(self.stats.read_text(encoding="utf-8"))
