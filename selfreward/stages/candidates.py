"""Stage `candidates`: N sampled answers per prompt from the current model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfreward.config import CandidatesConfig
from selfreward.engines.base import Engine, Request, Sampling
from selfreward.errors import SelfRewardError
from selfreward.records import StageFiles
from selfreward.stage_inputs import PromptRecord, read_records
from selfreward.stages.common import WorkItem, mean, run_batches


def generate_candidates(
    config: CandidatesConfig, load_engine: Callable[[], Engine], out_dir: Path, seed: int, batch_size: int
) -> dict[str, Any]:
    """N answers to each prompt of OUT/prompts.jsonl (checked before `load_engine` loads the model)."""
    files = StageFiles(out_dir, "candidates")
    if files.done():
        return files.read_stats()
    prompts = StageFiles(out_dir, "prompts")
    if not prompts.records.exists():
        raise SelfRewardError(f"{prompts.records} not found: run the prompts stage first")
    rows = read_records(prompts.records, PromptRecord)  # may be empty: the stages after it then report zero records
    items = [WorkItem(f"{p['id']}-c", Request.user(p["prompt"]), {"prompt_id": p["id"], "prompt": p["prompt"]}) for p in rows]
    sampling = Sampling(config.temperature, config.top_p, config.max_new_tokens)
    run = run_batches(files, items, load_engine(), sampling, seed, batch_size, "candidates", n=config.n)
    records = run.records
    stats = {
        "stage": "candidates",
        "prompts": len(rows),
        "candidates": len(records),
        "empty": sum(1 for r in records if not r["text"]),
        "truncated": sum(1 for r in records if not r["finished"]),
        "mean_chars": mean([len(r["text"]) for r in records]),
        "mean_tokens": mean([r["num_tokens"] for r in records]),
        "new_tokens": run.new_tokens,
        "tokens_per_second": run.tokens_per_second,
    }
    files.finish(records, stats)
    return stats
