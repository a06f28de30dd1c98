"""One answer per prompt from a model (test prompts, validation prompts, benchmarks), resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfreward.batches import WorkItem, mean, run_batches
from selfreward.engines.base import Engine, Request, Sampling
from selfreward.records import StageFiles


def generate_answers(
    engine: Engine,
    prompts: list[dict[str, Any]],
    out_dir: Path,
    name: str,
    sampling: Sampling,
    seed: int,
    batch_size: int,
) -> dict[str, dict[str, Any]]:
    """One answer per prompt (`{id, prompt}`), kept in OUT/NAME.jsonl; id -> record."""
    files = StageFiles(out_dir, name)
    if files.done():
        return {r["id"]: r for r in files.read()}
    items = [WorkItem(p["id"], Request.user(p["prompt"]), {"prompt": p["prompt"]}) for p in prompts]
    run = run_batches(files, items, engine, sampling, seed, batch_size, f"answers {name}")
    files.finish(
        run.records,
        {
            "stage": "answers",
            "model": name,
            "answers": len(run.records),
            **answer_lengths(run.records),
            "tokens_per_second": run.tokens_per_second,
        },
    )
    return {r["id"]: r for r in run.records}


def answer_lengths(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "mean_chars": mean([len(r["text"]) for r in records]),
        "mean_tokens": mean([r["num_tokens"] for r in records]),
    }
