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
from collections import defaultdict
from pathlib import Path
from typing import Any

from scipy import stats as sps

from selfreward.intervals import mean_ci
from selfreward.records import StageFiles
from selfreward.stage_inputs import CandidateRecord, JudgmentRecord, judgments_by_candidate, read_records
from selfreward.stages.judge import response_score

PREVIOUS_DIR = "previous"
MAX_SMOOTHING = 0.49
"""Below 0.5, where conservative DPO's labels would carry no preference at all."""


def candidate_scores(directory: Path) -> dict[str, dict[str, float]]:
    """prompt id -> candidate id -> the candidate's score (as the pairs stage reads it) in `directory`
    (its candidates.jsonl and judgments.jsonl, checked; judgments of other candidates are left out)."""
    candidates = read_records(StageFiles(directory, "candidates").records, CandidateRecord)
    judgments = StageFiles(directory, "judgments").records
    by_candidate, _ = judgments_by_candidate(candidates, read_records(judgments, JudgmentRecord), judgments)
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
        tau = sps.kendalltau([scores[c] for c in both], [previous[prompt_id][c] for c in both]).statistic if len(both) >= 2 else math.nan
        if math.isnan(tau):
            undefined += 1
        else:
            taus.append(float(tau))
    return taus, undefined


def consistency_stats(out_dir: Path, previous_dir: Path | None, previous_model: str | None) -> dict[str, Any]:
    """The agreement of the two judges and the label smoothing it sets; eps 0 when there is no previous judge."""
    stats: dict[str, Any] = {"stage": "consistency", "previous_model": previous_model}
    if previous_dir is None:
        return stats | {"prompts_compared": 0, "tau_mean": None, "label_smoothing": 0.0, "note": "no previous judge: labels kept as they are"}
    taus, undefined = prompt_taus(candidate_scores(out_dir), candidate_scores(previous_dir))
    tau = mean_ci(taus)
    smoothing = 0.0 if tau["value"] is None else min(MAX_SMOOTHING, max(0.0, (1 - tau["value"]) / 2))
    return stats | {"prompts_compared": len(taus), "prompts_undefined": undefined, "tau_mean": tau["value"], "tau": tau, "label_smoothing": round(smoothing, 4)}
