"""Stage `pairs`: preference pairs from the averaged judge scores, picked by `pairs.policy`.

A candidate's score is the average of its valid judgments of one kind: its text scores (`text`
and `text_lenient`) when it has any, otherwise its digit-probability expectations. The two kinds
are never averaged together: an expectation sits near the middle of the scale, so mixing would
pull a candidate with one unparsable judgment towards 2.5. Candidates without a valid judgment
take no part (never a default low score); with `require_finished`, neither do answers cut at
`candidates.max_new_tokens` (DPO would teach the model to stop mid-sentence).

Both input files are checked first (selfreward.stage_inputs): a damaged line, a missing or
mistyped field, a score off its method's scale, a repeated id stop the stage with one line;
judgments of candidates not in candidates.jsonl are left out and counted.

Per prompt the policy (selfreward/pair_policies.py) picks chosen and rejected; by default
(`max_min`) the highest score and the lowest, margin = their exact difference. Whatever the
policy, a pair of two scored answers is kept only when its margin exceeds the minimum for its
score sources, and no pair is kept whose texts are the same. Pairs are chosen, filtered and
written with the same unrounded numbers.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from selfreward.batches import mean
from selfreward.config import PairsConfig
from selfreward.errors import SelfRewardError
from selfreward.judging import scale_named
from selfreward.judging.responses import response_score
from selfreward.pair_policies import POLICIES, SCORELESS, PromptCandidates, Scored, length, length_unit
from selfreward.records import StageFiles
from selfreward.stage_inputs import SCALE, CandidateRecord, JudgmentRecord, judgments_by_candidate, read_records
from selfreward.stages.prompts import REFERENCE_ANSWER
from selfreward.steps import AIFTStep, Column, Iteration, Tools, never

MARGIN_BINS = (0.1, 0.25, 0.5, 1.0, 2.0)
"""Upper edges of the margin histogram's buckets: `0` (ties), `0-0.1`, ..., `1-2`, `>2`."""


def minimum_margin(config: PairsConfig, chosen: Scored, rejected: Scored) -> float:
    """The margin a pair must exceed: `min_margin` if set, else by the sides' score sources."""
    if config.min_margin is not None:
        return config.min_margin
    if chosen.source == rejected.source and chosen.source in ("text", "implicit"):
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


def margin_of(chosen: Scored, rejected: Scored) -> float | None:
    """chosen - rejected score; None when a side has no score (a human answer, an unjudged sample)."""
    return None if chosen.score is None or rejected.score is None else chosen.score - rejected.score


def pair_row(prompt_id: str, chosen: Scored, rejected: Scored, unit: str) -> dict[str, Any]:
    return {
        "id": prompt_id,
        "prompt": chosen.record["prompt"],
        "chosen": chosen.record["text"],
        "rejected": rejected.record["text"],
        "chosen_score": chosen.score,
        "rejected_score": rejected.score,
        "margin": margin_of(chosen, rejected),
        "chosen_id": chosen.record["id"],
        "rejected_id": rejected.record["id"],
        "chosen_judgments": chosen.judgments,
        "rejected_judgments": rejected.judgments,
        "chosen_source": chosen.source,
        "rejected_source": rejected.source,
        "chosen_length": length(chosen.record, unit),
        "rejected_length": length(rejected.record, unit),
    }


def load_scored(
    candidates: list[dict[str, Any]],
    by_candidate: dict[str, list[dict[str, Any]]],
    require_finished: bool,
    need_scores: bool = True,
) -> tuple[dict[str, list[Scored]], Counter[str]]:
    """Eligible scored candidates by prompt id, and counts of the candidates left out and why.
    Without `need_scores`, unscored candidates stay eligible (score None, source `unjudged`)."""
    by_prompt: dict[str, list[Scored]] = {}
    excluded: Counter[str] = Counter()
    for c in candidates:
        eligible = by_prompt.setdefault(c["prompt_id"], [])
        found = response_score(by_candidate.get(c["id"], []))
        if found is None and need_scores:
            excluded["unscored"] += 1
        elif require_finished and not c.get("finished", True):
            excluded["unfinished"] += 1
        else:
            eligible.append(Scored(c, *found) if found else Scored(c, None, 0, "unjudged"))
    return by_prompt, excluded


def drop_reason(config: PairsConfig, chosen: Scored, rejected: Scored) -> str | None:
    """Why a picked pair is not kept (None: it is); the same rules for every policy."""
    margin = margin_of(chosen, rejected)
    if margin is not None:
        if not math.isfinite(margin):
            return "margin_beyond_float_range"  # implicit rewards near +-1e308: no margin JSON can hold
        if margin == 0:
            return "tie"
        if margin < 0:
            return "rejected_scores_higher"
        if margin <= minimum_margin(config, chosen, rejected):
            return "near_tie"
    if chosen.record["text"].strip() == rejected.record["text"].strip():
        return "identical_texts"
    if not chosen.record["text"].strip():
        return "blank_chosen"
    return None


ANCHOR_DIR = "anchor"
"""anchored: the iteration's subdirectory holding the initial model's answers to the iteration's
prompts (prompts.jsonl, candidates.jsonl: made once) and the current model's judgments of them
(judgments.jsonl); the candidates and judge stages run in it as they run in the iteration."""


def read_inputs(
    directory: Path, require_finished: bool, need_scores: bool, missing_hint: str, scale: tuple[int, int]
) -> tuple[dict[str, list[Scored]], Counter[str]]:
    """The scored candidates of `directory` (its candidates.jsonl and judgments.jsonl, checked; written
    scores on `scale`), and counts of what is left out: candidates by reason, `judgments_without_candidate`."""
    candidates, judgments = StageFiles(directory, "candidates"), StageFiles(directory, "judgments")
    for needed in (candidates, judgments) if need_scores else (candidates,):
        if not needed.records.exists():
            raise SelfRewardError(f"{needed.records} not found: {missing_hint or f'run the {needed.name} stage first'}")
    candidate_rows = read_records(candidates.records, CandidateRecord)
    judgment_rows = read_records(judgments.records, JudgmentRecord, scale) if judgments.records.exists() else []
    by_candidate, orphans = judgments_by_candidate(candidate_rows, judgment_rows, judgments.records)
    by_prompt, excluded = load_scored(candidate_rows, by_candidate, require_finished, need_scores)
    excluded["judgments_without_candidate"] = orphans
    return by_prompt, excluded


def make_pairs(
    config: PairsConfig,
    out_dir: Path,
    iteration: int = 1,
    reference_answers: dict[str, str] | None = None,
    scale: tuple[int, int] = SCALE,
) -> dict[str, Any]:
    """Pairs of iteration `iteration` (which picks `pairs.rho`) in `out_dir`. `reference_answers`
    (prompt id -> human answer) feed `spin`; `anchored` reads out_dir/anchor (ANCHOR_DIR); written
    judgments' scores must lie on `scale` (the judge scale's lowest and highest)."""
    files = StageFiles(out_dir, "pairs")
    if config.policy == "spin" and reference_answers is None:
        raise SelfRewardError(
            "pairs.policy spin needs the human answers of the iteration's IFT prompts (see stages/prompts.spin_prompts)"
        )
    by_prompt, excluded = read_inputs(out_dir, config.require_finished, config.policy not in SCORELESS, "", scale)
    anchor_hint = "pairs.policy anchored needs the initial model's answers, judged by the current model"
    anchors = (
        read_inputs(out_dir / ANCHOR_DIR, config.require_finished, True, anchor_hint, scale)[0]
        if config.policy == "anchored"
        else {}
    )
    rho = config.rho_at(iteration)
    dropped: Counter[str] = Counter()
    picked = []
    for prompt_id, scored in by_prompt.items():
        inputs = PromptCandidates(scored, (reference_answers or {}).get(prompt_id), tuple(anchors.get(prompt_id, ())))
        pick = POLICIES[config.policy](inputs, rho)
        reason = pick if isinstance(pick, str) else drop_reason(config, *pick)
        if reason is None:
            picked.append((prompt_id, *pick))
        else:
            dropped[reason] += 1
    unit = length_unit([s.record for _, *pair in picked for s in pair])
    pairs = [pair_row(prompt_id, chosen, rejected, unit) for prompt_id, chosen, rejected in picked]
    policy = {"name": config.policy, "rho": rho if config.policy == "length_control" else None}
    files.finish(pairs, pair_stats(by_prompt, pairs, dropped, excluded, policy, unit))
    return files.read_stats()


def best_worst_margins(by_prompt: dict[str, list[Scored]]) -> list[float]:
    """Highest minus lowest score of each prompt with two scored candidates, whatever the policy."""
    spreads = []
    for scored in by_prompt.values():
        scores = [s.score for s in scored if s.score is not None]
        if len(scores) >= 2:
            spreads.append(max(scores) - min(scores))
    return spreads


def pair_stats(
    by_prompt: dict[str, list[Scored]],
    pairs: list[dict[str, Any]],
    dropped: Counter[str],
    excluded: Counter[str],
    policy: dict[str, Any],
    unit: str,
) -> dict[str, Any]:
    n_prompts = len(by_prompt)
    margins = [p["margin"] for p in pairs if p["margin"] is not None]
    return {
        "stage": "pairs",
        "policy": policy,
        "prompts": n_prompts,
        "pairs": len(pairs),
        "pair_yield": round(len(pairs) / n_prompts, 3) if n_prompts else None,
        "unscored_candidates": excluded["unscored"],
        "unfinished_candidates_excluded": excluded["unfinished"],
        "judgments_without_candidate": excluded["judgments_without_candidate"],
        "dropped": dict(sorted(dropped.items())),
        "tie_rate": round(dropped["tie"] / n_prompts, 3) if n_prompts else None,
        "pair_sources": dict(sorted(Counter(pair_source_of(p) for p in pairs).items())),
        "margin_histogram": margin_histogram(margins),
        "best_worst_margin_histogram": margin_histogram(best_worst_margins(by_prompt)),
        "min_margin_kept": min(margins, default=None),
        "mean_margin": mean(margins),
        "mean_chosen_score": mean([p["chosen_score"] for p in pairs if p["chosen_score"] is not None]),
        "mean_rejected_score": mean([p["rejected_score"] for p in pairs if p["rejected_score"] is not None]),
        "mean_chosen_chars": mean([len(p["chosen"]) for p in pairs]),
        "mean_rejected_chars": mean([len(p["rejected"]) for p in pairs]),
        "length_unit": unit,
        "mean_chosen_length": mean([p["chosen_length"] for p in pairs]),
        "mean_rejected_length": mean([p["rejected_length"] for p in pairs]),
    }


def pair_source_of(pair: dict[str, Any]) -> str:
    sources = {pair["chosen_source"], pair["rejected_source"]}
    return sources.pop() if len(sources) == 1 else "mixed"


@dataclass(frozen=True)
class Pairs(AIFTStep):
    """Chosen/rejected pairs per prompt from the judged candidates -> ITER/pairs.jsonl (TRL's preference format)."""

    name: str
    config: PairsConfig
    out_dir: Path
    iteration: int
    scale: tuple[int, int]
    """The judge scale's lowest and highest score (written judgments are checked against it)."""
    stage: ClassVar[str] = "pairs"
    files: ClassVar[str] = "pairs"
    columns: ClassVar[tuple[Column, ...]] = (
        Column("pairs", "pairs"),
        Column("pair yield", "pair_yield"),
        Column("mean margin", "mean_margin"),
        Column("chosen length", "mean_chosen_length"),
        Column("rejected length", "mean_rejected_length"),
    )
    uses_model = staticmethod(never)

    @classmethod
    def build(cls, it: Iteration) -> Pairs:
        scale = scale_named(it.config.judge.scale)
        return cls(it.step_name("pairs"), it.config.pairs, it.out_dir, it.number, (scale.lowest, scale.highest))

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "pairs.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        answers = None
        if self.config.policy == "spin":
            answers = {
                r["id"]: r[REFERENCE_ANSWER]
                for r in StageFiles(self.out_dir, "prompts").read()
                if REFERENCE_ANSWER in r
            }
        return make_pairs(self.config, self.out_dir, self.iteration, answers, self.scale)
