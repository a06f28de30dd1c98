"""`judge_responses`: the one way every part of selfreward asks a model for judgments.

AIFT judging, EFT, reward-model evaluation, checkpoint selection, head-to-head and the meta-judge
all go through it: items -> prompts fitted to the judge's context (`fitted_request`) -> K samples
per item with the judgment's stop strings, in resumable batches -> records read by the judgment
(`Judgment.rows`). What a judgment asks and how its text is read is a `Judgment`: a point on a
`Scale` (`PointJudgment`, with the digit-probability fallback), a pairwise verdict
(selfreward.judging.pairwise) or the meta-judge's winner (selfreward.stages.meta_judge).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Protocol

from selfreward.batches import Batches, BatchRun, WorkItem, average, mean
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.judging.prompt import fitted_request, template_with
from selfreward.judging.scale import Scale
from selfreward.records import StageFiles

TEXT_METHODS = ("text", "text_lenient")


class Judgment(Protocol):
    """What a judge is asked (`template`; `shorten`: the fields cut to fit its context), where it stops
    and how its text is read."""

    @property
    def template(self) -> str: ...

    @property
    def shorten(self) -> tuple[str, ...]: ...

    @property
    def stop(self) -> tuple[str, ...]: ...

    def rows(self, engine: Engine, items: list[WorkItem], completions: list[Completion]) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class JudgeItem:
    """One thing to judge: the template's fields and what its records carry besides."""

    id: str
    fields: dict[str, str]
    payload: dict[str, Any]


def judge_requests(engine: Engine, judgment: Judgment, items: list[JudgeItem], max_new_tokens: int) -> list[WorkItem]:
    """Each item's prompt, fitted to the judge's context (`response_shortened` in its payload)."""
    work = []
    for item in items:
        request, shortened = fitted_request(judgment.template, item.fields, judgment.shorten, engine, max_new_tokens)
        work.append(WorkItem(item.id, request, item.payload | {"response_shortened": shortened}))
    return work


def judge_prompt(engine: Engine, judgment: Judgment, fields: dict[str, str], max_new_tokens: int) -> str:
    """The prompt text a judge sees for `fields` (fitted to its context): the prompt of an EFT
    example or of a meta-judge pair is the one the judge stage would show."""
    return judge_requests(engine, judgment, [JudgeItem("", fields, {})], max_new_tokens)[0].request.messages[0][1]


def judge_responses(
    engine: Engine,
    judgment: Judgment,
    items: list[JudgeItem],
    k: int,
    sampling: Sampling,
    files: StageFiles,
    seed: int,
    batch_size: int,
    label: str,
) -> BatchRun:
    """`k` judgments of every item (records `<item id><j>` for k > 1), resuming from `files`; returns
    the records in item order with this attempt's generated tokens and time."""
    work = judge_requests(engine, judgment, items, sampling.max_new_tokens)
    sampling = replace(sampling, stop=judgment.stop)
    with Batches(files, work, k, batch_size, engine, label) as batches:
        for batch in batches:
            groups = engine.generate_n([w.request for w in batch], k, sampling, batches.seeds(batch, seed))
            completions = [c for group in groups for c in group]
            batches.commit(judgment.rows(engine, batches.samples(batch), completions), completions)
    return batches.result()


@dataclass(frozen=True)
class PointJudgment:
    """A score on `scale`, read from the judgment's text; with `fallback`, the expected digit after
    `LABEL:` appended to the judgment where the text states none (`fallback`) or always (`always`)."""

    scale: Scale
    template: str
    fallback: str = "off"
    shorten: tuple[str, ...] = ("response",)

    @classmethod
    def of(cls, scale: Scale, template: str | None = None, fallback: str = "off") -> PointJudgment:
        return cls(scale, template_with(template or scale.template, ("instruction", "response")), fallback)

    @property
    def stop(self) -> tuple[str, ...]:
        return self.scale.stop

    def rows(self, engine: Engine, items: list[WorkItem], completions: list[Completion]) -> list[dict[str, Any]]:
        rows = [self.text_row(item, completion) for item, completion in zip(items, completions)]
        wanted = [
            i
            for i, r in enumerate(rows)
            if self.fallback == "always" or (self.fallback == "fallback" and r["score"] is None)
        ]
        if wanted and self.scale.digits:
            requests = [
                Request(items[i].request.messages, prefix=completions[i].text.rstrip() + f"\n{self.scale.label}:")
                for i in wanted
            ]
            for i, probs in zip(wanted, engine.choice_probs(requests, self.scale.digits)):
                if probs is not None:  # the engine saw no digit: the judgment keeps the score it had (or none)
                    rows[i] |= self.expectation(probs)
        return rows

    def text_row(self, item: WorkItem, completion: Completion) -> dict[str, Any]:
        found = self.scale.read(completion.text)
        score, method = (found.value, found.method) if found and found.value is not None else (None, None)
        return {
            "id": item.id,
            **item.payload,
            "text": completion.text,
            "num_tokens": completion.num_tokens,
            "text_score": score,
            "text_method": method,
            "score": score,
            "method": method,
        }

    def expectation(self, probs: list[float]) -> dict[str, Any]:
        points = self.scale.points
        expected = sum(p * q for p, q in zip(points, probs))
        argmax = points[max(range(len(probs)), key=probs.__getitem__)]
        return {
            "digit_probs": {"probs": [round(q, 4) for q in probs], "expected": round(expected, 4), "argmax": argmax},
            "score": round(expected, 4),
            "method": "digit_probs",
        }


def response_score(judgments: list[dict[str, Any]]) -> tuple[float, int, str] | None:
    """(average, number of judgments behind it, source) of one response's judgments, or None when
    none is valid. Text scores win: expectations are averaged only when no judgment has a text score,
    never mixed with text scores (they would pull the average towards the middle). An implicit-reward
    judge (`judge.kind: implicit`) gives one reward per response, source `implicit`."""
    text = [j["score"] for j in judgments if j["score"] is not None and j.get("method") in TEXT_METHODS]
    digits = [j["score"] for j in judgments if j["score"] is not None and j.get("method") == "digit_probs"]
    implicit = [j["score"] for j in judgments if j["score"] is not None and j.get("method") == "implicit"]
    for scores, source in ((text, "text"), (digits, "digit_probs"), (implicit, "implicit")):
        if scores:
            return average(scores), len(scores), source
    return None


def judgment_stats(scale: Scale, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Judge health: how often a score was read and from what, the score histogram, saturation."""
    n = len(records)
    methods = Counter(r["method"] or "none" for r in records)
    scores = [r["score"] for r in records if r["score"] is not None]
    return {
        "judgments": n,
        "parse_rate_text": round(sum(1 for r in records if r["text_score"] is not None) / n, 3) if n else None,
        "parse_rate_strict": round(sum(1 for r in records if r.get("text_method") == "text") / n, 3) if n else None,
        "score_source": dict(sorted(methods.items())),
        "valid_rate": round(len(scores) / n, 3) if n else None,
        "score_histogram": scale.histogram(scores),
        "top_score_share": scale.top_share(scores),
        "mean_score": mean(scores),
        "mean_judgment_tokens": mean([r["num_tokens"] for r in records]),
    }
