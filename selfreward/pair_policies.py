"""Pair policies (`pairs.policy`): which answers to one prompt become chosen and rejected.

Each policy is a pure function of one prompt's eligible candidates (already scored, unfinished ones
left out) and returns the (chosen, rejected) it picks, or the reason it picks none. Whether a
picked pair is kept (tie, margin, identical texts) is decided afterwards by the same rules for
every policy (stages/pairs.py). Policies:

- `max_min` (Self-Rewarding, the paper): the highest score vs the lowest.
- `length_control` (Meta-Rewarding, arXiv 2407.19594): the shortest answer scoring within
  rho x (max - min) of the top vs the longest within as much of the bottom.
- `spin` (SPIN, Chen et al. 2024): the human answer to an IFT prompt vs the model's own sample.
- `anchored` (Temporal Self-Rewarding, arXiv 2508.06026, "anchored rejection"): the current
  model's best answer vs the initial model's worst answer to the same prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HUMAN = "human"
"""The `source` of a human reference answer: it has no judge score."""


@dataclass(frozen=True)
class Scored:
    """A candidate with the score it takes part in pairing with."""

    record: dict[str, Any]
    score: float | None
    """The average of its valid judgments; None for a human answer or an unjudged sample (spin)."""
    judgments: int
    source: str
    """`text`, `digit_probs`, `implicit`, `unjudged` or `human`."""


@dataclass(frozen=True)
class PromptCandidates:
    """What a policy may look at for one prompt."""

    candidates: list[Scored]
    """The current model's eligible answers, in candidate order."""
    reference_answer: str | None = None
    """spin: the human answer to the prompt."""
    anchors: tuple[Scored, ...] = ()
    """anchored: the initial model's eligible answers to the prompt, scored by the current judge."""


Pick = tuple[Scored, Scored] | str
"""(chosen, rejected), or the reason no pair is picked."""


def length_unit(records: list[dict[str, Any]]) -> str:
    """`tokens` when every record has `num_tokens` (generated answers), else `chars`."""
    return "tokens" if all("num_tokens" in r for r in records) else "chars"


def length(record: dict[str, Any], unit: str) -> int:
    return int(record["num_tokens"]) if unit == "tokens" else len(record["text"])


def score_of(candidate: Scored) -> float:
    if candidate.score is None:
        raise ValueError(f"candidate {candidate.record.get('id')} has no score")
    return candidate.score


def max_min(candidates: list[Scored]) -> Pick:
    """The highest score vs the lowest (the first of equals: candidate order is stable)."""
    if len(candidates) < 2:
        return "fewer_than_2_eligible"
    return max(candidates, key=score_of), min(candidates, key=score_of)


def length_control(candidates: list[Scored], rho: float) -> Pick:
    """Chosen: the shortest non-blank answer scoring at least max - rho x (max - min); rejected: the
    longest scoring at most min + rho x (max - min). rho < 0.5 keeps the two bands apart. A blank
    answer is never the shortest good one (a judge that rated it highly erred)."""
    if len(candidates) < 2:
        return "fewer_than_2_eligible"
    top, bottom = max(map(score_of, candidates)), min(map(score_of, candidates))
    band = rho * (top - bottom) if rho else 0.0  # rho 0 with a spread beyond float range: no band, not NaN
    unit = length_unit([c.record for c in candidates])
    good = [c for c in candidates if score_of(c) >= top - band]
    chosen = min([c for c in good if c.record["text"].strip()] or good, key=lambda c: length(c.record, unit))
    rejected = max((c for c in candidates if score_of(c) <= bottom + band), key=lambda c: length(c.record, unit))
    return chosen, rejected


def spin(candidates: list[Scored], reference_answer: str | None) -> Pick:
    """Chosen: the human answer; rejected: the model's first eligible sample (scores unused)."""
    if reference_answer is None:
        return "no_reference_answer"
    if not candidates:
        return "no_eligible_candidate"
    sample = candidates[0]
    human = {
        "id": f"{sample.record['prompt_id']}-human",
        "prompt_id": sample.record["prompt_id"],
        "prompt": sample.record["prompt"],
        "text": reference_answer,
    }
    return Scored(human, None, 0, HUMAN), sample


def anchored(candidates: list[Scored], anchors: tuple[Scored, ...]) -> Pick:
    """Chosen: the current model's best answer; rejected: the initial model's worst answer."""
    if not anchors:
        return "no_anchor"
    if not candidates:
        return "no_eligible_candidate"
    return max(candidates, key=score_of), min(anchors, key=score_of)


POLICIES: dict[str, Callable[[PromptCandidates, float], Pick]] = {
    "max_min": lambda p, rho: max_min(p.candidates),
    "length_control": lambda p, rho: length_control(p.candidates, rho),
    "spin": lambda p, rho: spin(p.candidates, p.reference_answer),
    "anchored": lambda p, rho: anchored(p.candidates, p.anchors),
}
"""Policy name -> the policy applied to one prompt's inputs and the iteration's rho."""

SCORELESS = {"spin"}
"""Policies that read no judge score: their samples need no judgments."""
