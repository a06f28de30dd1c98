"""Pairwise verdicts: which of two answers serves the user better, asked in both orders.

A prompt's outcome for model X against model Y: X wins when the judge prefers X in both orders,
loses when it prefers Y in both, and ties otherwise (the two orders disagree, the judge says tie,
or a verdict cannot be parsed; unparsable verdicts are counted, never fatal). For AlpacaEval-style
win rates a tie counts as half a win.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfreward.batches import WorkItem
from selfreward.engines.base import Completion, Engine, Sampling
from selfreward.judging.prompt import template_with
from selfreward.judging.responses import JudgeItem, judge_responses
from selfreward.records import StageFiles

VERDICT_RE = re.compile(r"verdict[*\s]*[:=]?[*\s]*[\"'\[(]*\s*(A|B|tie)\b", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie' from the last `Verdict: ...` of a judgment, or None."""
    matches = VERDICT_RE.findall(text or "")
    if not matches:
        return None
    verdict = matches[-1]
    return "tie" if verdict.lower() == "tie" else verdict.upper()


@dataclass(frozen=True)
class VerdictJudgment:
    """`Verdict: A`, `B` or `tie` on two answers to one request (the `pairwise_compare` prompt)."""

    template: str
    shorten: tuple[str, ...] = ("answer_a", "answer_b")
    stop: tuple[str, ...] = ()

    @classmethod
    def default(cls) -> VerdictJudgment:
        return cls(template_with("pairwise_compare", ("instruction", "answer_a", "answer_b")))

    def rows(self, engine: Engine, items: list[WorkItem], completions: list[Completion]) -> list[dict[str, Any]]:
        return [
            {"id": it.id, **it.payload, "text": c.text, "verdict": parse_verdict(c.text)}
            for it, c in zip(items, completions)
        ]


def compare_answers(
    judge: Engine,
    prompts: dict[str, str],
    answers_x: dict[str, str],
    answers_y: dict[str, str],
    out_dir: Path,
    name: str,
    sampling: Sampling,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """Judge X against Y on every prompt in both orders (resumable in OUT/NAME.jsonl); returns win/tie/lose for X."""
    files = StageFiles(out_dir, name)
    items = []
    for pid, prompt in prompts.items():
        for order, (a, b) in (("xy", (answers_x[pid], answers_y[pid])), ("yx", (answers_y[pid], answers_x[pid]))):
            items.append(
                JudgeItem(
                    f"{pid}-{order}",
                    {"instruction": prompt, "answer_a": a, "answer_b": b},
                    {"prompt_id": pid, "order": order},
                )
            )
    records = judge_responses(
        judge, VerdictJudgment.default(), items, 1, sampling, files, seed, batch_size, f"judge {name}"
    ).records
    stats = {"stage": "compare", **tally(records)}
    files.finish(records, stats)
    return stats


def outcome(xy: str | None, yx: str | None) -> str:
    """X's result from the verdicts with X shown first (xy) and second (yx)."""
    if (xy, yx) == ("A", "B"):
        return "win"
    if (xy, yx) == ("B", "A"):
        return "lose"
    return "tie"


def tally(records: list[dict[str, Any]]) -> dict[str, Any]:
    verdicts: dict[str, dict[str, str | None]] = {}
    for record in records:
        verdicts.setdefault(record["prompt_id"], {})[record["order"]] = record["verdict"]
    results = [outcome(v.get("xy"), v.get("yx")) for v in verdicts.values()]
    n = len(results)
    pct = {k: round(100 * results.count(k) / n, 1) if n else None for k in ("win", "tie", "lose")}
    return {
        "prompts": n,
        **pct,
        "win_rate": round(100 * (results.count("win") + 0.5 * results.count("tie")) / n, 1) if n else None,
        "unparsable_verdicts": sum(1 for r in records if r["verdict"] is None),
        "order_disagreements": sum(
            1
            for v in verdicts.values()
            if None not in (v.get("xy"), v.get("yx"))
            and outcome(v.get("xy"), v.get("yx")) == "tie"
            and v.get("xy") != "tie"
            and v.get("yx") != "tie"
        ),
    }
