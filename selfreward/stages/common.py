"""Shared machinery of generation stages: stable seeds, resumable batches, progress with tokens/s."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.records import StageFiles


def derive_seed(seed: int, key: str) -> int:
    """A 31-bit seed from the run seed and a stable key (independent of batch order or resumes)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big") >> 1


@dataclass(frozen=True)
class WorkItem:
    id: str
    request: Request
    payload: dict[str, Any]
    """Fields copied into the record written for this item."""


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


@dataclass
class BatchRun:
    records: list[dict[str, Any]]
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float | None:
        return round(self.new_tokens / self.seconds, 1) if self.seconds > 0 and self.new_tokens else None


def sample_records(item: WorkItem, n: int) -> list[WorkItem]:
    """The records one item's `n` samples become: the item itself when n is 1, else ids
    `<item id><j>` with `index: j` added to the payload."""
    if n == 1:
        return [item]
    return [WorkItem(f"{item.id}{j}", item.request, item.payload | {"index": j}) for j in range(n)]


def default_rows(items: list[WorkItem], completions: list[Completion]) -> list[dict[str, Any]]:
    return [{"id": it.id, **it.payload, "text": c.text, "num_tokens": c.num_tokens, "finished": c.finished} for it, c in zip(items, completions)]


def run_batches(
    files: StageFiles,
    items: list[WorkItem],
    engine: Engine,
    sampling: Sampling,
    seed: int,
    batch_size: int,
    label: str,
    finish_batch: Callable[[list[WorkItem], list[Completion]], list[dict[str, Any]]] = default_rows,
    n: int = 1,
) -> BatchRun:
    """Generate `n` samples per item (one record each, see `sample_records`), resuming from the
    records already in `files`.

    Items are sorted by prompt length and cut into batches of `batch_size` samples; each item
    is seeded from its own id and each batch is committed (fsynced) as a whole, so a resumed run
    writes exactly the records an uninterrupted one would. `finish_batch` turns a batch's
    records-to-be and completions into records (default: payload + id + text)."""
    done = {r["id"]: r for r in files.load_progress()}
    ordered = sorted(items, key=lambda it: (engine.prompt_length(it.request), it.id))
    per_batch = max(1, batch_size // n)
    batches = [ordered[i : i + per_batch] for i in range(0, len(ordered), per_batch)]
    new_tokens, started = 0, time.perf_counter()
    finished = sum(1 for item in items for record in sample_records(item, n) if record.id in done)
    with progress_bar() as bar:
        task = bar.add_task(label, total=len(items) * n, completed=finished, rate="")
        for batch in batches:
            records = [record for item in batch for record in sample_records(item, n)]
            if all(record.id in done for record in records):
                continue
            groups = engine.generate_n([it.request for it in batch], n, sampling, [derive_seed(seed, it.id) for it in batch])
            completions = [c for group in groups for c in group]
            rows = finish_batch(records, completions)
            files.append(rows)
            done.update((r["id"], r) for r in rows)
            finished += len(rows)
            new_tokens += sum(c.num_tokens for c in completions)
            elapsed = time.perf_counter() - started
            bar.update(task, completed=finished, rate=f"{new_tokens / max(elapsed, 1e-9):.0f} tok/s")
    seconds = time.perf_counter() - started
    return BatchRun([done[record.id] for item in items for record in sample_records(item, n)], new_tokens, seconds)


def average(values: list[float]) -> float:
    """The mean of finite `values` (not empty), also where their sum would overflow a float."""
    total = sum(values)
    return total / len(values) if math.isfinite(total) else sum(v / len(values) for v in values)


def mean(values: list[float]) -> float | None:
    return round(average(values), 3) if values else None
