"""Stage `consistency` (`dpo.label_smoothing: cream`): how far M_t's judge agrees with M_{t-1}'s.

CREAM (Wang et al., ICLR 2025, Consistency Regularized Self-Rewarding): M_{t-1} judges M_t's
candidates with the same judge (ITER/previous/judgments.jsonl); per prompt, Kendall's tau between
the two judges' scores of its candidates (scipy.stats.kendalltau); tau = their mean. The DPO of
the iteration then trains with label smoothing eps = (1 - tau) / 2: full trust in labels both
judges agree on (tau 1), none where their orders are unrelated (tau 0 gives eps 0.5, no gradient at
equal rewards), clipped to [0, 0.49]. A prompt whose scores are constant under either judge has
no defined tau and is left out (counted).
"""

from __future__ import annotations

import math
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from scipy import stats as sps

from selfreward.config import Config
from selfreward.intervals import mean_ci
from selfreward.judging import scale_named
from selfreward.judging.responses import response_score
from selfreward.models import resolve_model
from selfreward.records import StageFiles, write_json
from selfreward.stage_inputs import SCALE, CandidateRecord, JudgmentRecord, judgments_by_candidate, read_records
from selfreward.stages.judge import judge_of
from selfreward.steps import AIFTStep, Column, Iteration, Step, Tools, run_parts

PREVIOUS_DIR = "previous"
MAX_SMOOTHING = 0.49
"""Below 0.5, where conservative DPO's labels would carry no preference at all."""


def candidate_scores(directory: Path, scale: tuple[int, int] = SCALE) -> dict[str, dict[str, float]]:
    """prompt id -> candidate id -> the candidate's score (as the pairs stage reads it) in `directory`
    (its candidates.jsonl and judgments.jsonl, checked; judgments of other candidates are left out)."""
    candidates = read_records(StageFiles(directory, "candidates").records, CandidateRecord)
    judgments = StageFiles(directory, "judgments").records
    by_candidate, _ = judgments_by_candidate(candidates, read_records(judgments, JudgmentRecord, scale), judgments)
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for candidate in candidates:
        found = response_score(by_candidate.get(candidate["id"], []))
        if found is not None:
            out[candidate["prompt_id"]][candidate["id"]] = found[0]
    return out


def prompt_taus(current: dict[str, dict[str, float]], previous: dict[str, dict[str, float]]) -> tuple[list[float], int]:
    """Kendall's tau per prompt over the candidates both judges scored; and how many prompts had none defined."""
    taus, undefined = [], 0
    for prompt_id, scores in current.items():
        both = sorted(set(scores) & set(previous.get(prompt_id, {})))
        tau = (
            sps.kendalltau([scores[c] for c in both], [previous[prompt_id][c] for c in both]).statistic
            if len(both) >= 2
            else math.nan
        )
        if math.isnan(tau):
            undefined += 1
        else:
            taus.append(float(tau))
    return taus, undefined


def consistency_stats(
    out_dir: Path, previous_dir: Path | None, previous_model: str | None, scale: tuple[int, int] = SCALE
) -> dict[str, Any]:
    """The agreement of the two judges and the label smoothing it sets; eps 0 when there is no previous judge."""
    stats: dict[str, Any] = {"stage": "consistency", "previous_model": previous_model}
    if previous_dir is None:
        return stats | {
            "prompts_compared": 0,
            "tau_mean": None,
            "label_smoothing": 0.0,
            "note": "no previous judge: labels kept as they are",
        }
    taus, undefined = prompt_taus(candidate_scores(out_dir, scale), candidate_scores(previous_dir, scale))
    tau = mean_ci(taus)
    smoothing = 0.0 if tau["value"] is None else min(MAX_SMOOTHING, max(0.0, (1 - tau["value"]) / 2))
    return stats | {
        "prompts_compared": len(taus),
        "prompts_undefined": undefined,
        "tau_mean": tau["value"],
        "tau": tau,
        "label_smoothing": round(smoothing, 4),
    }


@dataclass(frozen=True)
class Consistency(AIFTStep):
    """cream: M_{t-1} judges M_t's candidates too (in ITER/previous); the two judges' rank agreement
    sets the iteration's DPO label smoothing -> ITER/consistency.stats.json."""

    name: str
    out_dir: Path
    previous: str | None
    judge: Step | None
    """M_{t-1}'s judge step over ITER/previous; None when there is no previous judge to compare with."""
    scale: tuple[int, int]
    """The judge scale's lowest and highest score (written judgments are checked against it)."""
    stage: ClassVar[str] = "consistency"
    files: ClassVar[str] = "consistency"
    columns: ClassVar[tuple[Column, ...]] = (
        Column("judge agreement tau", "tau_mean", "consistency_tau"),
        Column("label smoothing", "label_smoothing"),
    )

    @staticmethod
    def enabled(config: Config) -> bool:
        return config.dpo.label_smoothing == "cream"

    @classmethod
    def build(cls, it: Iteration) -> Consistency:
        previous = it.lineage.previous
        usable = previous and (
            it.config.judge.kind == "text" or it.lineage.previous_trained_from or it.config.judge.reference
        )
        judge = (
            judge_of(
                it,
                it.out_dir / PREVIOUS_DIR,
                "previous-judge",
                resolve_model(previous),
                it.lineage.previous_trained_from,
            )
            if usable
            else None
        )
        scale = scale_named(it.config.judge.scale)
        return cls(it.step_name("consistency"), it.out_dir, previous or None, judge, (scale.lowest, scale.highest))

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "consistency.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        previous_dir = None
        if self.judge is not None:
            previous_dir = self.out_dir / PREVIOUS_DIR
            previous_dir.mkdir(exist_ok=True)
            shutil.copyfile(self.out_dir / "candidates.jsonl", previous_dir / "candidates.jsonl")
            run_parts((self.judge,), tools)
        stats = consistency_stats(self.out_dir, previous_dir, self.previous, self.scale)
        write_json(self.out_dir / "consistency.stats.json", stats)
        return stats
