"""Reward-model metrics: how well a model's own judge scores order human-ranked responses.

Definitions (per PAPER.md; a response's score is the average of its valid judgments, text scores
before digit-probability expectations as in `response_score`):
- pairwise accuracy: over all pairs of responses with different human ranks, the share the model
  orders the same way. A tied or missing model score counts as half a pair (the expected value of
  breaking the tie at random), so a constant judge scores 50%; `tie_rate` says how often. Its 95%
  bootstrap interval resamples groups (`pairwise_accuracy_ci`); `group_agreement` keeps each
  group's (agreeing, compared) pairs for paired comparisons between models.
- exact match: the share of groups whose every pair (of different human rank) is ordered strictly
  the same way by the model.
- 5-best: of the responses the model scored the scale's top (average >= top - 0.5, 4.5 on 0-5),
  the share humans ranked best.
- Spearman / Kendall tau: per group between scores and human order (scipy.stats), averaged over
  groups. A group where either side is constant or a score is missing has no defined correlation
  and contributes 0 (counted in `undefined_correlation_groups`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from scipy import stats as sps

from selfreward.config import Config
from selfreward.engines.base import Engine, Sampling
from selfreward.intervals import mean_ci, ratio_ci
from selfreward.judging import point_judgment, scale_named
from selfreward.judging.responses import JudgeItem, judge_responses, judgment_stats, response_score
from selfreward.records import StageFiles


def rm_metrics(groups: list[tuple[list[float], list[float | None]]], top: float = 4.5) -> dict[str, Any]:
    """Metrics over groups of (human ranks, model scores); rank 0 is best; a score of `top` or more is
    the scale's best (5-best)."""
    pairs = agree = ties = exact = 0.0
    five, five_best = 0, 0
    spearman, kendall, undefined = [], [], 0
    per_group: list[list[float]] = []
    for ranks, scores in groups:
        group_exact = True
        agree_before, pairs_before = agree, pairs
        for i in range(len(ranks)):
            if scores[i] is not None and scores[i] >= top:  # type: ignore[operator]
                five += 1
                five_best += ranks[i] == min(ranks)
            for j in range(i + 1, len(ranks)):
                if ranks[i] == ranks[j]:
                    continue
                pairs += 1
                a, b = scores[i], scores[j]
                if a is None or b is None or a == b:
                    ties += 1
                    agree += 0.5
                    group_exact = False
                elif (a > b) == (ranks[i] < ranks[j]):
                    agree += 1
                else:
                    group_exact = False
        exact += group_exact
        per_group.append([agree - agree_before, pairs - pairs_before])
        if any(s is None for s in scores) or len(set(scores)) < 2 or len(set(ranks)) < 2:
            undefined += 1
            spearman.append(0.0)
            kendall.append(0.0)
        else:
            order = [-r for r in ranks]
            rho = sps.spearmanr(scores, order).statistic
            tau = sps.kendalltau(scores, order).statistic
            spearman.append(0.0 if math.isnan(rho) else float(rho))
            kendall.append(0.0 if math.isnan(tau) else float(tau))
    n = len(groups)
    return {
        "groups": n,
        "pairs": int(pairs),
        "pairwise_accuracy": round(agree / pairs, 4) if pairs else None,
        "pairwise_accuracy_ci": ratio_ci([g[0] for g in per_group], [g[1] for g in per_group]),
        "group_agreement": per_group,
        "tie_rate": round(ties / pairs, 4) if pairs else None,
        "exact_match": round(exact / n, 4) if n else None,
        "five_best": round(five_best / five, 4) if five else None,
        "scored_five": five,
        "spearman": round(sum(spearman) / n, 4) if n else None,
        "spearman_ci": mean_ci(spearman),
        "kendall_tau": round(sum(kendall) / n, 4) if n else None,
        "undefined_correlation_groups": undefined,
    }


def judge_groups(
    config: Config, engine: Engine, groups: list[dict[str, Any]], files: StageFiles, name: str, seed: int
) -> list[dict[str, Any]]:
    """`eval.rm_samples` judgments of every response of `groups` (resumable) with the model's own judge."""
    items = [
        JudgeItem(
            f"{g['id']}-r{r}-j{k}",
            {"instruction": g["prompt"], "response": resp["text"]},
            {"group_id": g["id"], "response_index": r, "sample": k},
        )
        for g in groups
        for r, resp in enumerate(g["responses"])
        for k in range(config.eval.rm_samples)
    ]
    judgment = point_judgment(config.judge)
    sampling = Sampling(config.judge.temperature, config.judge.top_p, config.judge.max_new_tokens)
    run = judge_responses(engine, judgment, items, 1, sampling, files, seed, config.engine.batch_size, f"rm {name}")
    files.finish(
        run.records,
        {
            "stage": "rm-judge",
            "model": name,
            **judgment_stats(judgment.scale, run.records),
            "tokens_per_second": run.tokens_per_second,
        },
    )
    return run.records


def evaluate_rm(
    config: Config, engine: Engine, groups: list[dict[str, Any]], out_dir: Path, name: str, seed: int
) -> dict[str, Any]:
    """Judge every response of `groups` (rows of eft/eval.jsonl) `eval.rm_samples` times with the model's
    own judge prompt and settings (resumable), then compute the metrics."""
    files = StageFiles(out_dir, f"{name}.judgments")
    if files.done():
        records = files.read()
    else:
        records = judge_groups(config, engine, groups, files, name, seed)
    judged: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        judged[(record["group_id"], record["response_index"])].append(record)
    table = []
    for g in groups:
        found = [response_score(judged.get((g["id"], r), [])) for r in range(len(g["responses"]))]
        table.append(([resp["rank"] for resp in g["responses"]], [f[0] if f else None for f in found]))
    scale = scale_named(config.judge.scale)
    health = judgment_stats(scale, records)
    return {
        **rm_metrics(table, scale.highest - 0.5),
        "judge_parse_rate": health["parse_rate_text"],
        "judge_valid_rate": health["valid_rate"],
    }
