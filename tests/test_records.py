"""Partial files after a kill: a batch is committed whole, so a cut batch is made again exactly once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from selfreward.batches import WorkItem, run_batches
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.records import BATCH_END, StageFiles, read_committed, read_jsonl

SAMPLING = Sampling(temperature=0.7, top_p=0.9, max_new_tokens=8)


class EchoEngine(Engine):
    """Deterministic completions (non-ASCII and U+2028 included, so cuts can split a character)."""

    def __init__(self) -> None:
        self.batches = 0

    def generate(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Completion]:
        self.batches += 1
        return [Completion(f"é{r.messages[0][1][-1]}\u2028{seed % 97}", num_tokens=3) for r in requests]


ITEMS = [WorkItem(f"x{i}", Request.user("ask " * (i % 3) + str(i)), {"index": i}) for i in range(5)]


def run(directory: Path, engine: Engine | None = None) -> list[dict]:
    return run_batches(StageFiles(directory, "answers"), ITEMS, engine or EchoEngine(), SAMPLING, 7, 2, "test").records


def partial_ids(directory: Path) -> list[str]:
    lines = (directory / "answers.jsonl.partial").read_text(encoding="utf-8").split("\n")
    return [row["id"] for row in map(json.loads, filter(None, lines)) if row != BATCH_END]


def test_batch_cut_by_a_kill_is_made_again_once(tmp_path):
    expected = run(tmp_path / "reference")
    full = (tmp_path / "reference" / "answers.jsonl.partial").read_text(encoding="utf-8")
    lines = full.split("\n")  # batch 1: lines 0-2 (two rows, end), batch 2: lines 3-5
    assert json.loads(lines[2]) == BATCH_END
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "answers.jsonl.partial").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20], encoding="utf-8")
    assert [r["id"] for r in read_committed(cut / "answers.jsonl.partial")] == partial_ids(tmp_path / "reference")[:2]
    engine = EchoEngine()
    assert run(cut, engine) == expected
    assert engine.batches == 2  # batches 2 and 3, never batch 1 again
    ids = partial_ids(cut)
    assert len(ids) == len(set(ids)) == len(ITEMS)


def test_every_cut_point_resumes_without_duplicates_to_identical_records(tmp_path, monkeypatch):
    monkeypatch.setattr("os.fsync", lambda fd: None)  # durability is not what this test is about
    expected = run(tmp_path / "reference")
    full = (tmp_path / "reference" / "answers.jsonl.partial").read_bytes()
    for offset in range(len(full) + 1):
        directory = tmp_path / f"cut{offset}"
        directory.mkdir()
        (directory / "answers.jsonl.partial").write_bytes(full[:offset])
        records = run(directory)
        assert records == expected, offset
        duplicates = [i for i, n in Counter(partial_ids(directory)).items() if n > 1]
        assert duplicates == [], offset
        files = StageFiles(directory, "answers")
        files.finish(records, {})
        assert read_jsonl(files.records) == expected and not files.partial.exists(), offset


def test_finished_records_are_progress_and_no_partial_means_none(tmp_path):
    files = StageFiles(tmp_path, "answers")
    assert files.load_progress() == []
    expected = run(tmp_path)
    files.finish(expected, {"answers": len(expected)})
    engine = EchoEngine()
    assert run(tmp_path, engine) == expected and engine.batches == 0
