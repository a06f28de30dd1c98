"""Which score makes the better judge: one sampled text score, three averaged, or the expected
value of the digit probabilities after the judgment (`judge.fallback=always`)?

    python bench/judge_scoring.py RUN_DIR [--model M1] [--ranked FILE] [--samples 3] [--max-groups N]

Judges every response of the human-ranked groups (default: all first-turn groups of the oasst1
English validation split in ../shared/data) `--samples` times with the model's own judge prompt,
reading both the text score and the digit-probability expectation of every judgment (records
under RUN_DIR/bench/judge_scoring, resumable). Then reward-modelling metrics
(selfreward.eval.rm) for each way of scoring, with 95% bootstrap confidence intervals over groups
(scipy.stats.bootstrap) and the paired difference of each against the first.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps
from shared_data import OASST1_VALIDATION_GROUPS

from selfreward.batches import derive_seed
from selfreward.config import load_config
from selfreward.engines import make_engine
from selfreward.eval.rm import judge_groups, rm_metrics
from selfreward.overlap import group_rows
from selfreward.records import StageFiles
from selfreward.seed_data import load_ranked

Score = Callable[[list[dict[str, Any]]], float | None]


def average(values: list[float | None]) -> float | None:
    valid = [v for v in values if v is not None]
    return sum(valid) / len(valid) if valid else None


def expected(judgment: dict[str, Any]) -> float | None:
    return judgment["digit_probs"]["expected"] if judgment.get("digit_probs") else None


SCORINGS: dict[str, Score] = {
    "text K=1": lambda js: js[0]["text_score"],
    "text K=3": lambda js: average([j["text_score"] for j in js]),
    "expected K=1": lambda js: expected(js[0]),
    "expected K=3": lambda js: average([expected(j) for j in js]),
}


def group_tables(
    groups: list[dict[str, Any]], records: list[dict[str, Any]], score: Score
) -> list[tuple[list[float], list[float | None]]]:
    judged: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: r["sample"]):
        judged[(record["group_id"], record["response_index"])].append(record)
    return [
        ([resp["rank"] for resp in g["responses"]], [score(judged[(g["id"], r)]) for r in range(len(g["responses"]))])
        for g in groups
    ]


def pair_counts(table: list[tuple[list[float], list[float | None]]]) -> np.ndarray:
    """Per group: (agreeing pairs, with ties and missing scores as half, number of pairs)."""
    rows = []
    for ranks, scores in table:
        agree = total = 0.0
        for i in range(len(ranks)):
            for j in range(len(ranks)):
                if ranks[i] < ranks[j]:
                    total += 1
                    a, b = scores[i], scores[j]
                    agree += 0.5 if a is None or b is None or a == b else float(a > b)
        rows.append((agree, total))
    return np.array(rows)


def accuracy_interval(counts: np.ndarray, baseline: np.ndarray | None = None) -> tuple[float, float]:
    """95% percentile-bootstrap interval over groups of pairwise accuracy (or of its difference to `baseline`)."""

    def statistic(index: np.ndarray) -> float:
        index = index.astype(int)
        value = counts[index, 0].sum() / counts[index, 1].sum()
        return value - (baseline[index, 0].sum() / baseline[index, 1].sum() if baseline is not None else 0.0)

    result = sps.bootstrap(
        (np.arange(len(counts)),),
        statistic,
        vectorized=False,
        n_resamples=2000,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return result.confidence_interval.low, result.confidence_interval.high


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--model", default="M1")
    parser.add_argument("--ranked", default=str(OASST1_VALIDATION_GROUPS))
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--max-groups", type=int, default=None)
    args = parser.parse_args()
    config = load_config(
        str(args.run_dir / "config.yaml"), ["judge.fallback=always", f"eval.rm_samples={args.samples}"]
    )
    groups = group_rows(load_ranked([args.ranked], config.data.lang)[0])[: args.max_groups]
    files = StageFiles(args.run_dir / "bench" / "judge_scoring", f"{args.model}.judgments")
    if files.done():
        records = files.read()
    else:
        engine = make_engine(config, str(args.run_dir / "models" / args.model))
        try:
            records = judge_groups(
                config, engine, groups, files, args.model, derive_seed(config.seed, f"bench-judge-scoring-{args.model}")
            )
        finally:
            engine.close()
    responses = sum(len(g["responses"]) for g in groups)
    parsed = sum(1 for r in records if r["text_score"] is not None) / len(records)
    print(
        f"\n{args.model} on {Path(args.ranked).stem}: {len(groups)} groups, {responses} responses, {args.samples} judgments each; text parse rate {parsed:.1%}\n"
    )
    print("| score | pairwise acc [95% CI] | tie rate | Spearman | Kendall tau | vs text K=1 [95% CI] |")
    print("|---|---|---|---|---|---|")
    baseline = None
    for name, score in SCORINGS.items():
        table = group_tables(groups, records, score)
        metrics, counts = rm_metrics(table), pair_counts(table)
        low, high = accuracy_interval(counts)
        diff = "-"
        if baseline is not None:
            d_low, d_high = accuracy_interval(counts, baseline)
            gain = counts[:, 0].sum() / counts[:, 1].sum() - baseline[:, 0].sum() / baseline[:, 1].sum()
            diff = f"{gain:+.1%} [{d_low:+.1%}, {d_high:+.1%}]"
        baseline = counts if baseline is None else baseline
        print(
            f"| {name} | {metrics['pairwise_accuracy']:.1%} [{low:.1%}, {high:.1%}] | {metrics['tie_rate']:.1%} | {metrics['spearman']:.3f} | {metrics['kendall_tau']:.3f} | {diff} |"
        )


if __name__ == "__main__":
    main()
