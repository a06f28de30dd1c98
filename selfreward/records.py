"""Plain artifacts on disk: JSONL records, atomic writes, and per-stage progress files.

A stage appends finished records to `NAME.jsonl.partial` (flushed and fsynced per batch),
then renames it to `NAME.jsonl` and writes `NAME.stats.json`; the stats file marks the stage done.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

UMASK = os.umask(0)
os.umask(UMASK)


def read_jsonl(path: Path, tolerate_truncated_tail: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a partial file may end in a line cut short by a kill, which is dropped."""
    rows = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if tolerate_truncated_tail and number >= len(lines) - 1:
                break
            raise
    return rows


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when the file does not exist (yet)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_atomic(path: Path, text: str) -> None:
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


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


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
            rows = read_jsonl(self.partial, tolerate_truncated_tail=True)
            write_jsonl(self.partial, rows)  # drop a truncated tail before appending again
            return rows
        return []

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.partial, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
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
