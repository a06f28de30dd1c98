"""Stage `judge`: the model scores each candidate K times with the additive 5-point prompt.

The score is read from the generated judgment only (never from the prompt, which itself says
"Score: <total points>"): the last `Score: N` with 0 <= N <= 5; `N/D` forms are rescaled to 5
points; decimals are kept. Without a score, the configured fallback appends `Score:` after the
judgment and reads the probabilities of the digits 0-5 (expected value and argmax are kept).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from selfreward.config import JudgeConfig
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.errors import SelfRewardError
from selfreward.prompts import fill, load_template
from selfreward.records import StageFiles
from selfreward.stages.common import WorkItem, mean, run_batches

SCORE_RE = re.compile(
    r"score\s*(?:of|is|was|=|:)?\s*[*_\"'`]*\s*[:=]?\s*[*_\"'`]*\s*(-?\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
DIGITS = [str(d) for d in range(6)]


def parse_score(judgment: str) -> float | None:
    """The last `Score: N` of a judgment as a number in [0, 5], or None (missing or out of range)."""
    matches = list(SCORE_RE.finditer(judgment or ""))
    if not matches:
        return None
    value, scale = matches[-1].groups()
    score = float(value)
    if scale is not None:
        if float(scale) <= 0:
            return None
        score = score * 5 / float(scale)
    return score if 0 <= score <= 5 else None


def judge_request(template: str, prompt: str, response: str) -> Request:
    return Request.user(fill(template, instruction=prompt, response=response))


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
        text_score = parse_score(completion.text)
        rows.append(
            {
                "id": item.id,
                **item.payload,
                "text": completion.text,
                "num_tokens": completion.num_tokens,
                "text_score": text_score,
                "score": text_score,
                "method": "text" if text_score is not None else None,
            }
        )
    wanted = [i for i, r in enumerate(rows) if config.fallback == "always" or (config.fallback == "fallback" and r["score"] is None)]
    if wanted:
        requests = [Request(items[i].request.messages, prefix=completions[i].text.rstrip() + "\nScore:") for i in wanted]
        for i, probs in zip(wanted, engine.choice_probs(requests, DIGITS)):
            expected = sum(d * p for d, p in enumerate(probs))
            rows[i]["digit_probs"] = {"probs": [round(p, 4) for p in probs], "expected": round(expected, 4), "argmax": max(range(6), key=probs.__getitem__)}
            rows[i]["score"] = round(expected, 4)
            rows[i]["method"] = "digit_probs"
    return rows


def judge_candidates(config: JudgeConfig, engine: Engine, out_dir: Path, seed: int, batch_size: int) -> dict[str, Any]:
    files = StageFiles(out_dir, "judgments")
    if files.done():
        return files.read_stats()
    candidates = StageFiles(out_dir, "candidates")
    if not candidates.records.exists():
        raise SelfRewardError(f"{candidates.records} not found: run the candidates stage first")
    template = judge_template(config.template)
    items = [
        WorkItem(
            f"{c['id']}-j{k}",
            judge_request(template, c["prompt"], c["text"]),
            {"candidate_id": c["id"], "prompt_id": c["prompt_id"], "index": k},
        )
        for c in candidates.read()
        for k in range(config.k)
    ]
    sampling = Sampling(config.temperature, config.top_p, config.max_new_tokens)
    run = run_batches(files, items, engine, sampling, seed, batch_size, "judge", lambda b, c: score_completions(config, engine, b, c))
    records = run.records
    stats = {"stage": "judge", **judgment_stats(records), "new_tokens": run.new_tokens, "tokens_per_second": run.tokens_per_second}
    files.finish(records, stats)
    return stats


def judgment_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    methods = Counter(r["method"] or "none" for r in records)
    text_parsed = sum(1 for r in records if r["text_score"] is not None)
    scores = [r["score"] for r in records if r["score"] is not None]
    return {
        "judgments": n,
        "parse_rate_text": round(text_parsed / n, 3) if n else None,
        "score_source": dict(sorted(methods.items())),
        "valid_rate": round(len(scores) / n, 3) if n else None,
        "score_histogram": score_histogram(scores),
        "mean_score": mean(scores),
        "mean_judgment_tokens": mean([r["num_tokens"] for r in records]),
    }


def score_histogram(scores: list[float]) -> dict[str, int]:
    """Counts of scores rounded to the nearest integer point, 0-5."""
    counts = Counter(int(round(s)) for s in scores)
    return {str(d): counts.get(d, 0) for d in range(6)}
