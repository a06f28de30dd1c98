"""Stage `judge`: M_t scores each candidate K times with the judge prompt of `judge.scale` (the paper's
additive 5-point prompt by default); selfreward.judging reads each score from the generated judgment
only, with the digit-probability fallback of `judge.fallback`, and fits long answers to the context.
With `judge.kind: implicit` the judge is M_t's implicit reward instead (stages/implicit_judge.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from selfreward.config import Config, JudgeConfig
from selfreward.engines.base import Sampling
from selfreward.errors import SelfRewardError
from selfreward.judging import point_judgment
from selfreward.judging.responses import JudgeItem, judge_responses, judgment_stats
from selfreward.models import resolve_model
from selfreward.pair_policies import SCORELESS
from selfreward.records import StageFiles
from selfreward.stage_inputs import CandidateRecord, read_records
from selfreward.stages.implicit_judge import ImplicitJudge
from selfreward.steps import AIFTStep, Column, Iteration, Step, Tools


def candidate_items(out_dir: Path) -> list[JudgeItem]:
    """What the judge judges: every candidate of OUT/candidates.jsonl (checked) with its prompt."""
    candidates = StageFiles(out_dir, "candidates")
    if not candidates.records.exists():
        raise SelfRewardError(f"{candidates.records} not found: run the candidates stage first")
    rows = read_records(candidates.records, CandidateRecord)
    return [
        JudgeItem(
            f"{c['id']}-j",
            {"instruction": c["prompt"], "response": c["text"]},
            {"candidate_id": c["id"], "prompt_id": c["prompt_id"]},
        )
        for c in rows
    ]


@dataclass(frozen=True)
class Judge(AIFTStep):
    """K written judgments of every candidate in `out_dir` by `model` -> judgments.jsonl and its stats."""

    name: str
    config: JudgeConfig
    out_dir: Path
    model: str
    seed: int
    batch_size: int
    stage: ClassVar[str] = "judge"
    files: ClassVar[str] = "judgments"
    columns: ClassVar[tuple[Column, ...]] = (
        Column("judge parse", "parse_rate_text", "judge_parse_rate"),
        Column("judge valid", "valid_rate", "judge_valid_rate"),
        Column("top-score share", "top_score_share"),
    )

    @staticmethod
    def enabled(config: Config) -> bool:
        return config.pairs.policy not in SCORELESS  # spin pairs human answers with unjudged samples

    @classmethod
    def build(cls, it: Iteration) -> Step:
        return judge_of(it, it.out_dir, "judge", it.model, it.lineage.trained_from)

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "judgments.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        judgment = point_judgment(self.config)
        files = StageFiles(self.out_dir, "judgments")
        sampling = Sampling(self.config.temperature, self.config.top_p, self.config.max_new_tokens)
        items = candidate_items(self.out_dir)  # checked before the model loads
        run = judge_responses(
            tools.engines.get(self.model),
            judgment,
            items,
            self.config.k,
            sampling,
            files,
            self.seed,
            self.batch_size,
            "judge",
        )
        shortened = len({r["candidate_id"] for r in run.records if r.get("response_shortened")})
        stats = {
            "stage": "judge",
            **judgment_stats(judgment.scale, run.records),
            "responses_shortened": shortened,
            "new_tokens": run.new_tokens,
            "tokens_per_second": run.tokens_per_second,
        }
        files.finish(run.records, stats)
        return stats


def judge_of(it: Iteration, out_dir: Path, stage: str, model: str, trained_from: str) -> Step:
    """The judge step for the candidates in `out_dir` by `model`: written judgments, or with
    `judge.kind: implicit` the model's implicit reward against `judge.reference`, else `trained_from`."""
    config = it.config.judge
    if config.kind == "implicit":
        reference = config.reference or trained_from
        if not reference:
            raise SelfRewardError(
                "judge.kind implicit needs judge.reference (the model M_t was trained from) when the judge runs on its own"
            )
        return ImplicitJudge(it.step_name(stage), config, it.config.model, out_dir, model, resolve_model(reference))
    return Judge(it.step_name(stage), config, out_dir, model, it.seed(stage), it.batch_size)
