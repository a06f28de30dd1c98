"""Stage `anchor` (`pairs.policy: anchored`, Temporal Self-Rewarding): the initial model's answers
to the iteration's prompts (ITER/anchor/candidates.jsonl), judged by M_t (ITER/anchor/judgments.jsonl);
the pairs stage rejects the initial model's worst answer."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from selfreward.config import Config
from selfreward.models import resolve_model
from selfreward.records import write_json
from selfreward.stages.candidates import Candidates
from selfreward.stages.judge import judge_of
from selfreward.stages.pairs import ANCHOR_DIR
from selfreward.steps import AIFTStep, Column, Iteration, Step, Tools, run_parts


@dataclass(frozen=True)
class Anchor(AIFTStep):
    """The initial model answers ITER/prompts.jsonl in ITER/anchor, M_t judges the answers -> ITER/anchor.stats.json."""

    name: str
    out_dir: Path
    initial: str
    answer: Step
    judge: Step
    stage: ClassVar[str] = "anchor"
    files: ClassVar[str] = "anchor"
    columns: ClassVar[tuple[Column, ...]] = (Column("anchor score", "mean_score", "anchor_mean_score"),)

    @staticmethod
    def enabled(config: Config) -> bool:
        return config.pairs.policy == "anchored"

    @classmethod
    def build(cls, it: Iteration) -> Anchor:
        anchor_dir = it.out_dir / ANCHOR_DIR
        initial = resolve_model(it.lineage.initial or it.config.model.name_or_path)
        answer = Candidates(
            it.step_name("anchor-candidates"),
            it.config.candidates,
            anchor_dir,
            initial,
            it.seed("anchor-candidates"),
            it.batch_size,
        )
        return cls(
            it.step_name("anchor"),
            it.out_dir,
            initial,
            answer,
            judge_of(it, anchor_dir, "anchor-judge", it.model, it.lineage.trained_from),
        )

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "anchor.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        anchor_dir = self.out_dir / ANCHOR_DIR
        anchor_dir.mkdir(exist_ok=True)
        shutil.copyfile(self.out_dir / "prompts.jsonl", anchor_dir / "prompts.jsonl")
        answered, judged = run_parts((self.answer, self.judge), tools)
        stats = {
            "stage": "anchor",
            "model": self.initial,
            "candidates": answered["candidates"],
            "truncated": answered["truncated"],
            "judgments": judged["judgments"],
            "valid_rate": judged["valid_rate"],
            "mean_score": judged["mean_score"],
        }
        write_json(self.out_dir / "anchor.stats.json", stats)
        return stats
