"""Stage `pairs`: best-vs-worst preference pairs from the averaged judge scores.

A candidate's score is the average of its valid judgments of one kind: its text scores (`text`
and `text_lenient`) when it has any, otherwise its digit-probability expectations. The two kinds
are never averaged together: an expectation sits near the middle of the scale, so mixing would
pull a candidate with one unparsable judgment towards 2.5. Candidates without a valid judgment
take no part (never a default low score); with `require_finished`, neither do answers cut at
`candidates.max_new_tokens` (DPO would teach the model to stop mid-sentence).

Per prompt: chosen = the highest score, rejected = the lowest, margin = their exact difference.
The pair is kept when the margin exceeds the minimum for its score sources and the texts differ.
Pairs are chosen, filtered and written with the same unrounded numbers.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfreward.config import PairsConfig
from selfreward.errors import SelfRewardError
from selfreward.records import StageFiles
from selfreward.stages.common import mean
from selfreward.stages.judge import response_score

MARGIN_BINS = (0.1, 0.25, 0.5, 1.0, 2.0)
"""Upper edges of the margin histogram's buckets: `0` (ties), `0-0.1`, ..., `1-2`, `>2`."""


@dataclass(frozen=True)
class Scored:
    """A candidate with the score it takes part in pairing with."""

    record: dict[str, Any]
    score: float
    judgments: int
    source: str
    """`text` or `digit_probs`."""


def minimum_margin(config: PairsConfig, chosen: Scored, rejected: Scored) -> float:
    """The margin a pair must exceed: `min_margin` if set, else by the sides' score sources."""
    if config.min_margin is not None:
        return config.min_margin
    if chosen.source == rejected.source == "text":
        return 0.0
    return config.digit_probs_margin


def margin_bucket(margin: float) -> str:
    if margin == 0:
        return "0"
    i = bisect.bisect_left(MARGIN_BINS, margin)
    if i == len(MARGIN_BINS):
        return f">{MARGIN_BINS[-1]:g}"
    return f"{MARGIN_BINS[i - 1] if i else 0:g}-{MARGIN_BINS[i]:g}"


def margin_histogram(margins: list[float]) -> dict[str, int]:
    buckets = ["0", *(margin_bucket(edge) for edge in MARGIN_BINS), f">{MARGIN_BINS[-1]:g}"]
    counts = Counter(margin_bucket(m) for m in margins)
    return {b: counts.get(b, 0) for b in buckets}


def pair_row(prompt_id: str, best: Scored, worst: Scored) -> dict[str, Any]:
    return {
        "id": prompt_id,
        "prompt": best.record["prompt"],
        "chosen": best.record["text"],
        "rejected": worst.record["text"],
        "chosen_score": best.score,
        "rejected_score": worst.score,
        "margin": best.score - worst.score,
        "chosen_id": best.record["id"],
        "rejected_id": worst.record["id"],
        "chosen_judgments": best.judgments,
        "rejected_judgments": worst.judgments,
        "chosen_source": best.source,
        "rejected_source": worst.source,
    }


def load_scored(candidates: list[dict[str, Any]], judgments: list[dict[str, Any]], require_finished: bool) -> tuple[dict[str, list[Scored]], Counter[str]]:
    """Eligible scored candidates by prompt id, and counts of the candidates left out and why."""
    by_candidate: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for j in judgments:
        by_candidate[j["candidate_id"]].append(j)
    by_prompt: dict[str, list[Scored]] = {}
    excluded: Counter[str] = Counter()
    for c in candidates:
        eligible = by_prompt.setdefault(c["prompt_id"], [])
        found = response_score(by_candidate.get(c["id"], []))
        if found is None:
            excluded["unscored"] += 1
        elif require_finished and not c.get("finished", True):
            excluded["unfinished"] += 1
        else:
            eligible.append(Scored(c, *found))
    return by_prompt, excluded


def select_pair(config: PairsConfig, scored: list[Scored]) -> tuple[Scored, Scored, str | None]:
    """Best and worst candidate of a prompt and why they make no pair (None: they do)."""
    best = max(scored, key=lambda s: s.score)  # first of equals: candidate order is stable
    worst = min(scored, key=lambda s: s.score)
    margin = best.score - worst.score
    if margin == 0:
        return best, worst, "tie"
    if margin <= minimum_margin(config, best, worst):
        return best, worst, "near_tie"
    if best.record["text"].strip() == worst.record["text"].strip():
        return best, worst, "identical_texts"
    return best, worst, None


def make_pairs(config: PairsConfig, out_dir: Path) -> dict[str, Any]:
    files = StageFiles(out_dir, "pairs")
    if files.done():
        return files.read_stats()
    candidates, judgments = StageFiles(out_dir, "candidates"), StageFiles(out_dir, "judgments")
    for needed in (candidates, judgments):
        if not needed.records.exists():
            raise SelfRewardError(f"{needed.records} not found: run the {needed.name} stage first")
    by_prompt, excluded = load_scored(candidates.read(), judgments.read(), config.require_finished)
    dropped: Counter[str] = Counter()
    pairs, best_worst_margins = [], []
    for prompt_id, scored in by_prompt.items():
        if len(scored) < 2:
            dropped["fewer_than_2_eligible"] += 1
            continue
        best, worst, reason = select_pair(config, scored)
        best_worst_margins.append(best.score - worst.score)
        if reason is None:
            pairs.append(pair_row(prompt_id, best, worst))
        else:
            dropped[reason] += 1
    files.finish(pairs, pair_stats(by_prompt, pairs, dropped, excluded, best_worst_margins))
    return files.read_stats()


def pair_stats(by_prompt: dict[str, list[Scored]], pairs: list[dict[str, Any]], dropped: Counter[str], excluded: Counter[str], best_worst_margins: list[float]) -> dict[str, Any]:
    n_prompts = len(by_prompt)
    return {
        "stage": "pairs",
        "prompts": n_prompts,
        "pairs": len(pairs),
        "pair_yield": round(len(pairs) / n_prompts, 3) if n_prompts else None,
        "unscored_candidates": excluded["unscored"],
        "unfinished_candidates_excluded": excluded["unfinished"],
        "dropped": dict(sorted(dropped.items())),
        "tie_rate": round(dropped["tie"] / n_prompts, 3) if n_prompts else None,
        "pair_sources": dict(sorted(Counter(pair_source_of(p) for p in pairs).items())),
        "margin_histogram": margin_histogram([p["margin"] for p in pairs]),
        "best_worst_margin_histogram": margin_histogram(best_worst_margins),
        "min_margin_kept": min((p["margin"] for p in pairs), default=None),
        "mean_margin": mean([p["margin"] for p in pairs]),
        "mean_chosen_score": mean([p["chosen_score"] for p in pairs]),
        "mean_rejected_score": mean([p["rejected_score"] for p in pairs]),
        "mean_chosen_chars": mean([len(p["chosen"]) for p in pairs]),
        "mean_rejected_chars": mean([len(p["rejected"]) for p in pairs]),
    }


def pair_source_of(pair: dict[str, Any]) -> str:
    sources = {pair["chosen_source"], pair["rejected_source"]}
    return sources.pop() if len(sources) == 1 else "mixed"
