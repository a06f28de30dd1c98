"""Generation in resumable batches: stable seeds, work items, batches committed whole, progress with tokens/s."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
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
    return [
        {"id": it.id, **it.payload, "text": c.text, "num_tokens": c.num_tokens, "finished": c.finished}
        for it, c in zip(items, completions)
    ]


class Batches:
    """The resumable plan of one generation: `n` samples per item (one record each, see
    `sample_records`), items sorted by prompt length and cut into batches of `batch_size` samples,
    the records already in `files` kept. Iterating yields the batches still to make; `commit` appends
    a made batch as a whole (fsynced), so a resumed run writes exactly the records an uninterrupted
    one would; `seeds` seeds each item from its own id. Use it as a context manager (progress bar)."""

    def __init__(self, files: StageFiles, items: list[WorkItem], n: int, batch_size: int, engine: Engine, label: str):
        self.files, self.items, self.n, self.label = files, items, n, label
        self.done = {r["id"]: r for r in files.load_progress()}
        ordered = sorted(items, key=lambda it: (engine.prompt_length(it.request), it.id))
        per_batch = max(1, batch_size // n)
        self.plan = [ordered[i : i + per_batch] for i in range(0, len(ordered), per_batch)]
        self.finished = sum(1 for item in items for record in sample_records(item, n) if record.id in self.done)
        self.new_tokens, self.started = 0, time.perf_counter()
        self.bar = progress_bar()

    def __enter__(self) -> Batches:
        self.bar.__enter__()
        self.task = self.bar.add_task(self.label, total=len(self.items) * self.n, completed=self.finished, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def __iter__(self) -> Iterator[list[WorkItem]]:
        for batch in self.plan:
            if not all(record.id in self.done for item in batch for record in sample_records(item, self.n)):
                yield batch

    def seeds(self, batch: list[WorkItem], seed: int) -> list[int]:
        return [derive_seed(seed, item.id) for item in batch]

    def samples(self, batch: list[WorkItem]) -> list[WorkItem]:
        """The records-to-be of a batch's items, in order."""
        return [record for item in batch for record in sample_records(item, self.n)]

    def commit(self, rows: list[dict[str, Any]], completions: list[Completion]) -> None:
        self.files.append(rows)
        self.done.update((r["id"], r) for r in rows)
        self.finished += len(rows)
        self.new_tokens += sum(c.num_tokens for c in completions)
        rate = self.new_tokens / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, completed=self.finished, rate=f"{rate:.0f} tok/s")

    def result(self) -> BatchRun:
        """Every record, in item order, with this attempt's generated tokens and time."""
        return BatchRun(
            [self.done[r.id] for item in self.items for r in sample_records(item, self.n)],
            self.new_tokens,
            time.perf_counter() - self.started,
        )


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
    """Generate `n` samples per item in resumable batches (`Batches`); `finish_batch` turns a batch's
    records-to-be and completions into records (default: payload + id + text)."""
    with Batches(files, items, n, batch_size, engine, label) as batches:
        for batch in batches:
            groups = engine.generate_n([it.request for it in batch], n, sampling, batches.seeds(batch, seed))
            completions = [c for group in groups for c in group]
            batches.commit(finish_batch(batches.samples(batch), completions), completions)
    return batches.result()


def average(values: list[float]) -> float:
    """The mean of finite `values` (not empty), also where their sum would overflow a float."""
    total = sum(values)
    return total / len(values) if math.isfinite(total) else sum(v / len(values) for v in values)


def mean(values: list[float]) -> float | None:
    return round(average(values), 3) if values else None
