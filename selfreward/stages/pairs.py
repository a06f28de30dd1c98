"""Stage `pairs`: best-vs-worst preference pairs from the averaged judge scores.

Per prompt: chosen = the candidate with the highest average of its valid judgments, rejected =
the lowest. Candidates without a valid judgment take no part (never a default low score). Pairs
are dropped when the two averages tie, the margin is below `min_margin`, or the texts are equal.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from selfreward.config import PairsConfig
from selfreward.errors import SelfRewardError
from selfreward.records import StageFiles
from selfreward.stages.common import mean


def make_pairs(config: PairsConfig, out_dir: Path) -> dict[str, Any]:
    files = StageFiles(out_dir, "pairs")
    if files.done():
        return files.read_stats()
    candidates, judgments = StageFiles(out_dir, "candidates"), StageFiles(out_dir, "judgments")
    for needed in (candidates, judgments):
        if not needed.records.exists():
            raise SelfRewardError(f"{needed.records} not found: run the {needed.name} stage first")
    scores: dict[str, list[float]] = defaultdict(list)
    for j in judgments.read():
        if j["score"] is not None:
            scores[j["candidate_id"]].append(j["score"])
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    unscored = 0
    for c in candidates.read():
        if scores.get(c["id"]):
            by_prompt[c["prompt_id"]].append(c | {"score": sum(scores[c["id"]]) / len(scores[c["id"]])})
        else:
            unscored += 1
            by_prompt.setdefault(c["prompt_id"], [])
    dropped: Counter[str] = Counter()
    pairs = []
    for prompt_id, scored in by_prompt.items():
        if len(scored) < 2:
            dropped["fewer_than_2_scored"] += 1
            continue
        best = max(scored, key=lambda c: c["score"])  # first of equals: candidate order is stable
        worst = min(scored, key=lambda c: c["score"])
        margin = best["score"] - worst["score"]
        if margin <= 0:
            dropped["tie"] += 1
        elif margin < config.min_margin:
            dropped["below_margin"] += 1
        elif best["text"].strip() == worst["text"].strip():
            dropped["identical_texts"] += 1
        else:
            pairs.append(
                {
                    "id": prompt_id,
                    "prompt": best["prompt"],
                    "chosen": best["text"],
                    "rejected": worst["text"],
                    "chosen_score": round(best["score"], 4),
                    "rejected_score": round(worst["score"], 4),
                    "chosen_id": best["id"],
                    "rejected_id": worst["id"],
                }
            )
    n_prompts = len(by_prompt)
    stats = {
        "stage": "pairs",
        "prompts": n_prompts,
        "pairs": len(pairs),
        "pair_yield": round(len(pairs) / n_prompts, 3) if n_prompts else None,
        "unscored_candidates": unscored,
        "dropped": dict(sorted(dropped.items())),
        "tie_rate": round(dropped["tie"] / n_prompts, 3) if n_prompts else None,
        "mean_chosen_score": mean([p["chosen_score"] for p in pairs]),
        "mean_rejected_score": mean([p["rejected_score"] for p in pairs]),
        "mean_score_gap": mean([p["chosen_score"] - p["rejected_score"] for p in pairs]),
        "mean_chosen_chars": mean([len(p["chosen"]) for p in pairs]),
        "mean_rejected_chars": mean([len(p["rejected"]) for p in pairs]),
    }
    files.finish(pairs, stats)
    return stats
