"""Stage `judge`: the model scores each candidate K times with the additive 5-point prompt.

The score is read from the generated judgment only (never from the prompt, which itself says
"Score: <total points>"): first the last line that is only `Score: N` (method `text`), else the
last `score N` with `score` as a whole word (method `text_lenient`); 0 <= N <= 5, `N/D` forms are
rescaled to 5 points, decimals are kept. Without a score, the configured fallback appends
`Score:` after the judgment and reads the probabilities of the digits 0-5 (expected value and
argmax are kept; method `digit_probs`). Judge prompts that would not fit the model's context
shorten the response being judged, with a marker, never the rubric.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfreward.config import JudgeConfig
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.errors import SelfRewardError
from selfreward.prompts import fill, load_template
from selfreward.records import StageFiles
from selfreward.stage_inputs import CandidateRecord, read_records
from selfreward.stages.common import WorkItem, average, mean, run_batches

_NUMBER = r"(-?\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?"
_EMPHASIS = r"[*_]*"
STRICT_SCORE_RE = re.compile(
    rf"^[ \t]*{_EMPHASIS}[ \t]*score[ \t]*{_EMPHASIS}[ \t]*:[ \t]*{_EMPHASIS}[ \t]*{_NUMBER}[ \t]*{_EMPHASIS}[ \t]*\.?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
"""A line that holds only `Score: N` (markdown bold/italics allowed, quotes not), as the judge prompt asks."""
LENIENT_SCORE_RE = re.compile(
    rf"\bscore\b[ \t]*(?:of|is|was|=|:)?[ \t]*[*_`\"']*[ \t]*[:=]?[ \t]*[*_`\"']*[ \t]*{_NUMBER}",
    re.IGNORECASE,
)
"""`score` as a whole word followed by a number anywhere in the text ("I'd give it a score of 4")."""
DIGITS = [str(d) for d in range(6)]
SCORE_LINE_ENDS = tuple(f"Score: {d}\n" for d in DIGITS)
"""Where a judgment stops: its `Score: N` line is complete (text after it would be ignored)."""


@dataclass(frozen=True)
class TextScore:
    value: float | None
    """The score in [0, 5], or None when the stated score is out of range."""
    method: str
    """`text` (strict: the last line that is only `Score: N`) or `text_lenient`."""
    end: int
    """Offset just past the score statement in the judgment."""


def _value(match: re.Match[str]) -> float | None:
    value, scale = match.groups()
    score = float(value)
    if scale is not None:
        if float(scale) <= 0:
            return None
        score = score * 5 / float(scale)
    return score if 0 <= score <= 5 else None


def read_text_score(judgment: str) -> TextScore | None:
    """The score a judgment states, or None when it states none.

    Strict rule first: the last line holding only `Score: N`; text after it (a remark, an example)
    is ignored. Otherwise the lenient rule: the last `score <number>` with `score` as a whole word
    (method `text_lenient`). `N/D` and `N out of D` are rescaled to 5 points; a stated score
    outside [0, 5] gives a TextScore whose value is None (invalid, never clamped)."""
    for pattern, method in ((STRICT_SCORE_RE, "text"), (LENIENT_SCORE_RE, "text_lenient")):
        matches = list(pattern.finditer(judgment or ""))
        if matches:
            return TextScore(_value(matches[-1]), method, matches[-1].end())
    return None


def parse_score(judgment: str) -> float | None:
    """The score a judgment states, in [0, 5], or None (missing or out of range)."""
    found = read_text_score(judgment)
    return found.value if found else None


def judge_request(template: str, prompt: str, response: str) -> Request:
    return Request.user(fill(template, instruction=prompt, response=response))


SHORTENED_MARKER = "\n[... the rest of this response was cut to fit the judge's context ...]"


def fitted_judge_request(template: str, prompt: str, response: str, engine: Engine, max_new_tokens: int) -> tuple[Request, bool]:
    """The judge request, with the response shortened (and marked) when the whole would not fit
    the engine's context; the rubric and the instruction are never cut. Returns (request, shortened)."""
    request = judge_request(template, prompt, response)
    room = engine.context_room(request, max_new_tokens)
    if room is None or room >= 0:
        return request, False
    kept, too_many = 0, len(response)  # binary search: the longest head of the response that fits
    while too_many - kept > 1:
        middle = (kept + too_many) // 2
        fits = engine.context_room(judge_request(template, prompt, response[:middle] + SHORTENED_MARKER), max_new_tokens)
        kept, too_many = (middle, too_many) if fits is not None and fits >= 0 else (kept, middle)
    return judge_request(template, prompt, response[:kept].rstrip() + SHORTENED_MARKER), True


def judge_template(name_or_path: str) -> str:
    template = load_template(name_or_path)
    missing = [f for f in ("{instruction}", "{response}") if f not in template]
    if missing:
        raise SelfRewardError(f"judge template {name_or_path!r} lacks {' and '.join(missing)}")
    return template


def score_completions(config: JudgeConfig, engine: Engine, items: list[WorkItem], completions: list[Completion]) -> list[dict[str, Any]]:
    """Records for a batch of judgments: parsed text score, digit-probability fallback, final score."""
    rows = []
    for item, completion in zip(items, completions):
        found = read_text_score(completion.text)
        text_score, text_method = (found.value, found.method) if found and found.value is not None else (None, None)
        rows.append(
            {
                "id": item.id,
                **item.payload,
                "text": completion.text,
                "num_tokens": completion.num_tokens,
                "text_score": text_score,
                "text_method": text_method,
                "score": text_score,
                "method": text_method,
            }
        )
    wanted = [i for i, r in enumerate(rows) if config.fallback == "always" or (config.fallback == "fallback" and r["score"] is None)]
    if wanted:
        requests = [Request(items[i].request.messages, prefix=completions[i].text.rstrip() + "\nScore:") for i in wanted]
        for i, probs in zip(wanted, engine.choice_probs(requests, DIGITS)):
            if probs is None:  # the engine saw no digit: the judgment keeps the score it had (or none)
                continue
            expected = sum(d * p for d, p in enumerate(probs))
            rows[i]["digit_probs"] = {"probs": [round(p, 4) for p in probs], "expected": round(expected, 4), "argmax": max(range(6), key=probs.__getitem__)}
            rows[i]["score"] = round(expected, 4)
            rows[i]["method"] = "digit_probs"
    return rows


def judge_candidates(
    config: JudgeConfig, load_engine: Callable[[], Engine], out_dir: Path, seed: int, batch_size: int
) -> dict[str, Any]:
    """K judgments of each candidate of OUT/candidates.jsonl (checked before `load_engine` loads the judge)."""
    files = StageFiles(out_dir, "judgments")
    if files.done():
        return files.read_stats()
    candidates = StageFiles(out_dir, "candidates")
    if not candidates.records.exists():
        raise SelfRewardError(f"{candidates.records} not found: run the candidates stage first")
    template = judge_template(config.template)
    rows = read_records(candidates.records, CandidateRecord)
    engine = load_engine()
    items = []
    for c in rows:
        request, shortened = fitted_judge_request(template, c["prompt"], c["text"], engine, config.max_new_tokens)
        payload = {"candidate_id": c["id"], "prompt_id": c["prompt_id"], "response_shortened": shortened}
        items.append(WorkItem(f"{c['id']}-j", request, payload))
    sampling = Sampling(config.temperature, config.top_p, config.max_new_tokens, stop=SCORE_LINE_ENDS)
    run = run_batches(files, items, engine, sampling, seed, batch_size, "judge", lambda b, c: score_completions(config, engine, b, c), n=config.k)
    records = run.records
    shortened_count = len({r["candidate_id"] for r in records if r.get("response_shortened")})
    stats = {"stage": "judge", **judgment_stats(records), "responses_shortened": shortened_count, "new_tokens": run.new_tokens, "tokens_per_second": run.tokens_per_second}
    files.finish(records, stats)
    return stats


TEXT_METHODS = ("text", "text_lenient")


def response_score(judgments: list[dict[str, Any]]) -> tuple[float, int, str] | None:
    """(average, number of judgments behind it, source) of one response's judgments, or None
    when none is valid. Text scores win: expectations are averaged only when no judgment has a
    text score, never mixed with text scores (they would pull the average towards the middle).
    An implicit-reward judge (`judge.kind: implicit`) gives one reward per response, source `implicit`."""
    text = [j["score"] for j in judgments if j["score"] is not None and j.get("method") in TEXT_METHODS]
    digits = [j["score"] for j in judgments if j["score"] is not None and j.get("method") == "digit_probs"]
    implicit = [j["score"] for j in judgments if j["score"] is not None and j.get("method") == "implicit"]
    for scores, source in ((text, "text"), (digits, "digit_probs"), (implicit, "implicit")):
        if scores:
            return average(scores), len(scores), source
    return None


def judgment_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    methods = Counter(r["method"] or "none" for r in records)
    text_parsed = sum(1 for r in records if r["text_score"] is not None)
    scores = [r["score"] for r in records if r["score"] is not None]
    return {
        "judgments": n,
        "parse_rate_text": round(text_parsed / n, 3) if n else None,
        "parse_rate_strict": round(sum(1 for r in records if r.get("text_method") == "text") / n, 3) if n else None,
        "score_source": dict(sorted(methods.items())),
        "valid_rate": round(len(scores) / n, 3) if n else None,
        "score_histogram": score_histogram(scores),
        "top_score_share": round(sum(1 for s in scores if round(s) == 5) / len(scores), 3) if scores else None,
        "mean_score": mean(scores),
        "mean_judgment_tokens": mean([r["num_tokens"] for r in records]),
    }


def score_histogram(scores: list[float]) -> dict[str, int]:
    """Counts of scores rounded to the nearest integer point, 0-5."""
    counts = Counter(round(s) for s in scores)
    return {str(d): counts.get(d, 0) for d in range(6)}
