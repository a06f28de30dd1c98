"""Stage `candidates`: N sampled answers per prompt from the current model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from selfreward.batches import WorkItem, mean, run_batches
from selfreward.config import CandidatesConfig
from selfreward.engines.base import Engine, Request, Sampling
from selfreward.errors import SelfRewardError
from selfreward.records import StageFiles
from selfreward.stage_inputs import PromptRecord, read_records
from selfreward.steps import AIFTStep, Column, Iteration, Tools


def generate_candidates(
    config: CandidatesConfig, load_engine: Callable[[], Engine], out_dir: Path, seed: int, batch_size: int
) -> dict[str, Any]:
    """`candidates.n` answers to each prompt of OUT/prompts.jsonl -> OUT/candidates.jsonl and its stats
    (the prompts are checked before `load_engine` loads the model)."""
    files = StageFiles(out_dir, "candidates")
    prompts = StageFiles(out_dir, "prompts")
    if not prompts.records.exists():
        raise SelfRewardError(f"{prompts.records} not found: run the prompts stage first")
    rows = read_records(prompts.records, PromptRecord)  # may be empty: the stages after it then report zero records
    items = [
        WorkItem(f"{p['id']}-c", Request.user(p["prompt"]), {"prompt_id": p["id"], "prompt": p["prompt"]}) for p in rows
    ]
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


@dataclass(frozen=True)
class Candidates(AIFTStep):
    """N answers per prompt of ITER/prompts.jsonl from M_t -> ITER/candidates.jsonl."""

    name: str
    config: CandidatesConfig
    out_dir: Path
    model: str
    seed: int
    batch_size: int
    stage: ClassVar[str] = "candidates"
    files: ClassVar[str] = "candidates"
    columns: ClassVar[tuple[Column, ...]] = (
        Column("candidates", "candidates"),
        Column("answer tokens", "mean_tokens", "candidate_mean_tokens"),
    )

    @classmethod
    def build(cls, it: Iteration) -> Candidates:
        return cls(
            it.step_name("candidates"), it.config.candidates, it.out_dir, it.model, it.seed("candidates"), it.batch_size
        )

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "candidates.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        return generate_candidates(
            self.config, partial(tools.engines.get, self.model), self.out_dir, self.seed, self.batch_size
        )
