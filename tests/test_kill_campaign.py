"""bench/kill_campaign.py counts what a finished record file cannot show: an id committed twice in a
`.partial` file (a batch appended again on resume), even after its stage finished and removed it."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

from selfreward.records import batch_text

BENCH = Path(__file__).resolve().parents[1] / "bench" / "kill_campaign.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("kill_campaign", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def write_partial(path: Path, *batches: list[dict], cut: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(batch_text(rows, path) for rows in batches) + cut)


def test_a_planted_duplicate_in_a_partial_file_is_caught(tmp_path):
    bench = load_bench()
    run_dir = tmp_path / "campaign"
    partial = run_dir / "iter1" / "candidates.jsonl.partial"
    write_partial(
        partial, [{"id": "p1-c0"}, {"id": "p1-c1"}], [{"id": "p2-c0"}], cut='{"id": "p2-c0"'
    )  # a cut batch: not committed
    write_partial(run_dir / "eval" / "rm" / "M1.jsonl.partial", [{"id": "g1"}])
    assert bench.partial_duplicates(run_dir) == {"iter1/candidates.jsonl.partial": 0, "eval/rm/M1.jsonl.partial": 0}
    write_partial(
        partial, [{"id": "p1-c0"}, {"id": "p1-c1"}], [{"id": "p1-c1"}, {"id": "p2-c0"}]
    )  # a batch appended again
    runner = bench.Runner(run_dir, tmp_path / "tiny.yaml", {}, tmp_path, [], [])
    runner.check_partials()
    partial.unlink()  # the stage finished: its .jsonl holds one record per id
    runner.check_partials()
    assert runner.duplicates == {"iter1/candidates.jsonl.partial": 1, "eval/rm/M1.jsonl.partial": 0}
    assert (
        bench.final_line(runner, Counter(lost=0, duplicated=0, differing=0))
        == "kills 0 lost 0 duplicated 1 differing 0"
    )
