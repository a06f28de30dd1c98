"""Answers from a model and pairwise comparisons by a judge, in both orders.

A prompt's outcome for model X against model Y: X wins when the judge prefers X in both orders,
loses when it prefers Y in both, and ties otherwise (the two orders disagree, the judge says tie,
or a verdict cannot be parsed; unparsable verdicts are counted, never fatal). For AlpacaEval-style
win rates a tie counts as half a win.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from selfreward.batches import WorkItem, mean, run_batches
from selfreward.engines.base import Engine, Request, Sampling
from selfreward.prompts import fill, load_template
from selfreward.records import StageFiles

VERDICT_RE = re.compile(r"verdict[*\s]*[:=]?[*\s]*[\"'\[(]*\s*(A|B|tie)\b", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie' from the last `Verdict: ...` of a judgment, or None."""
    matches = VERDICT_RE.findall(text or "")
    if not matches:
        return None
    verdict = matches[-1]
    return "tie" if verdict.lower() == "tie" else verdict.upper()


def generate_answers(engine: Engine, prompts: list[dict[str, Any]], out_dir: Path, name: str, sampling: Sampling, seed: int, batch_size: int) -> dict[str, dict[str, Any]]:
    """One answer per prompt (`{id, prompt}` or `{id, turns}`), cached in OUT/NAME.jsonl; id -> record."""
    files = StageFiles(out_dir, name)
    if files.done():
        return {r["id"]: r for r in files.read()}
    items = [WorkItem(p["id"], Request.user(p["prompt"]), {"prompt": p["prompt"]}) for p in prompts]
    run = run_batches(files, items, engine, sampling, seed, batch_size, f"answers {name}")
    files.finish(run.records, {"stage": "answers", "model": name, "answers": len(run.records), **answer_lengths(run.records), "tokens_per_second": run.tokens_per_second})
    return {r["id"]: r for r in run.records}


def answer_lengths(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"mean_chars": mean([len(r["text"]) for r in records]), "mean_tokens": mean([r["num_tokens"] for r in records])}


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
    """Judge X against Y on every prompt in both orders (resumable); returns win/tie/lose for X."""
    files = StageFiles(out_dir, name)
    if files.done():
        return files.read_stats()
    template = load_template("pairwise_compare")
    items = []
    for pid, prompt in prompts.items():
        for order, (a, b) in (("xy", (answers_x[pid], answers_y[pid])), ("yx", (answers_y[pid], answers_x[pid]))):
            items.append(WorkItem(f"{pid}-{order}", Request.user(fill(template, instruction=prompt, answer_a=a, answer_b=b)), {"prompt_id": pid, "order": order}))

    def finish(batch: list[WorkItem], completions: list[Any]) -> list[dict[str, Any]]:
        return [{"id": it.id, **it.payload, "text": c.text, "verdict": parse_verdict(c.text)} for it, c in zip(batch, completions)]

    run = run_batches(files, items, judge, sampling, seed, batch_size, f"judge {name}", finish)
    stats = {"stage": "compare", **tally(run.records)}
    files.finish(run.records, stats)
    return stats


def outcome(xy: str | None, yx: str | None) -> str:
    """X's result from the verdicts with X shown first (xy) and second (yx)."""
    prefers_x = (xy == "A", yx == "B")
    prefers_y = (xy == "B", yx == "A")
    if all(prefers_x):
        return "win"
    if all(prefers_y):
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
        "order_disagreements": sum(1 for v in verdicts.values() if None not in (v.get("xy"), v.get("yx")) and outcome(v.get("xy"), v.get("yx")) == "tie" and v.get("xy") != "tie" and v.get("yx") != "tie"),
    }
