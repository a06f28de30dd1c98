"""Plain artifacts on disk: JSONL records, atomic writes, and per-stage progress files.

A stage appends finished records to `NAME.jsonl.partial` one batch at a time, each batch closed
by a `{"_batch_end": true}` line and fsynced; then it writes `NAME.jsonl` and `NAME.stats.json`
(the stats file marks the stage done). A batch cut short by a kill lacks its closing line: on
resume its surviving rows are dropped and the whole batch is made again, never duplicated.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selfreward.errors import SelfRewardError

UMASK = os.umask(0)
os.umask(UMASK)
BATCH_END = {"_batch_end": True}


def _json_object(text: str, where: str) -> dict[str, Any]:
    """`text` parsed as a JSON object; anything else is a SelfRewardError naming `where`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        damaged = f"not valid JSON ({exc.msg} at column {exc.colno}); the file is damaged or cut short"
        raise SelfRewardError(f"{where}: {damaged}") from None
    except (ValueError, RecursionError) as exc:  # over-long integers, too deep nesting
        raise SelfRewardError(f"{where}: not valid JSON ({str(exc).split(':')[0]})") from None
    if not isinstance(value, dict):
        raise SelfRewardError(f"{where}: not a JSON object")
    return value


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SelfRewardError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except IsADirectoryError:
        raise SelfRewardError(f"{path} is a directory, not a file") from None


def numbered_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a finished JSONL file; a line that is not a
    JSON object is a SelfRewardError naming the file and the line."""
    lines = _text(path).split("\n")  # not splitlines: texts may hold U+2028
    numbered = enumerate(lines, 1)
    return [(number, _json_object(line, f"{path} line {number}")) for number, line in numbered if line.strip()]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a finished JSONL file (in-progress `.partial` files are read with `read_committed`)."""
    return [row for _, row in numbered_rows(path)]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when the file does not exist (yet)."""
    return _json_object(_text(path), str(path)) if path.exists() else {}


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


def non_finite(value: Any, where: str = "") -> str | None:
    """The location (`a.b[2]`) of the first NaN or infinity in a JSON-like value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the value"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = non_finite(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found:
            return found
    return None


def json_text(obj: Any, path: Path, indent: int | None = None) -> str:
    """`obj` as strict JSON: a NaN or an infinity (which JSON cannot hold) is a SelfRewardError naming `path`."""
    try:
        return json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError:
        where = non_finite(obj)
        raise SelfRewardError(f"not writing {path}: {where} is not a finite number (JSON holds none)") from None


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json_text(obj, path, indent=2) + "\n")


def jsonl_text(rows: Iterable[dict[str, Any]], path: Path) -> str:
    return "".join(json_text(r, path) + "\n" for r in rows)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_atomic(path, jsonl_text(rows, path))


def batch_text(rows: list[dict[str, Any]], path: Path) -> str:
    """Rows as one batch of the partial file `path`: the rows, then the line that closes the batch."""
    return jsonl_text([*rows, BATCH_END], path) if rows else ""


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
            write_atomic(self.partial, batch_text(rows, self.partial))  # drop a cut batch before appending again
            return rows
        return []

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with naming(self.partial), open(self.partial, "a", encoding="utf-8") as handle:
            handle.write(batch_text(rows, self.partial))
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self, rows: list[dict[str, Any]], stats: dict[str, Any]) -> None:
        write_jsonl(self.records, rows)
        self.partial.unlink(missing_ok=True)
        write_json(self.stats, stats)

    def read(self) -> list[dict[str, Any]]:
        return read_jsonl(self.records)

    def read_stats(self) -> dict[str, Any]:
        return read_json(self.stats)
