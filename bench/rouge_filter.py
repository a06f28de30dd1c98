"""The prompts stage's ROUGE-L duplicate filter: rouge_score's pure-Python LCS (before) vs rapidfuzz (now).

    python bench/rouge_filter.py [--prompts 4000] [--threshold 0.7] [--seed 0] [--tasks ../shared/data/self_instruct/seed_tasks.jsonl]

Makes `--prompts` prompts from the 175 self-instruct seed tasks by seeded word shuffles and
recombinations, filters them in order as the stage does (a prompt is rejected when its ROUGE-L F1
with a seed task or an earlier kept prompt reaches the threshold), and prints each
implementation's seconds, their ratio, and whether both kept the same prompts.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from rouge_score import rouge_scorer
from shared_data import SELF_INSTRUCT_TASKS

from selfreward.overlap import RougePool, rouge_tokens


def variants(tasks: list[str], count: int, seed: int) -> list[str]:
    """Prompts near the seed tasks: a task with some words swapped, the halves of two tasks
    joined, or a task shuffled with a few words of another."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        first, second = (t.split() for t in rng.sample(tasks, 2))
        kind = rng.randrange(3)
        if kind == 0:
            words = first[:]
            for _ in range(max(1, len(words) // 4)):
                i, j = rng.randrange(len(words)), rng.randrange(len(words))
                words[i], words[j] = words[j], words[i]
        elif kind == 1:
            words = first[: len(first) // 2] + second[len(second) // 2 :]
        else:
            words = first + rng.sample(second, min(3, len(second)))
            rng.shuffle(words)
        out.append(" ".join(words))
    return out


def old_keeps(pool: list[list[str]], tokens: list[str], threshold: float) -> bool:
    """The filter before rapidfuzz: rouge_score's LCS against every pooled prompt until one is similar."""
    keep = not any(rouge_scorer._score_lcs(other, tokens).fmeasure >= threshold for other in pool)
    if keep:
        pool.append(tokens)
    return keep


def new_keeps(pool: RougePool, tokens: list[str], threshold: float) -> bool:
    keep = not pool.reaches(tokens, threshold)
    if keep:
        pool.add(tokens)
    return keep


def timed_filter(
    keeps: Callable[[list[str], float], bool], prompts: list[list[str]], threshold: float
) -> tuple[list[int], float]:
    """Indices of the kept prompts and the seconds the filtering took."""
    start = time.perf_counter()
    kept = [i for i, tokens in enumerate(prompts) if keeps(tokens, threshold)]
    return kept, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=4000)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", type=Path, default=SELF_INSTRUCT_TASKS)
    args = parser.parse_args()
    tasks = [
        json.loads(line)["instruction"] for line in args.tasks.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    seeds = [rouge_tokens(t) for t in tasks]
    prompts = [rouge_tokens(p) for p in variants(tasks, args.prompts, args.seed)]
    old_pool, new_pool = list(seeds), RougePool(seeds)
    old_kept, old_seconds = timed_filter(lambda tokens, t: old_keeps(old_pool, tokens, t), prompts, args.threshold)
    new_kept, new_seconds = timed_filter(lambda tokens, t: new_keeps(new_pool, tokens, t), prompts, args.threshold)
    print(
        f"{len(prompts)} prompts from {len(tasks)} seed tasks, ROUGE-L threshold {args.threshold}: "
        f"kept {len(old_kept)} (rouge_score) and {len(new_kept)} (rapidfuzz), same prompts: {old_kept == new_kept}"
    )
    print(
        f"rouge_score _score_lcs: {old_seconds:.2f} s; rapidfuzz Indel: {new_seconds:.2f} s; old/new time ratio: {old_seconds / new_seconds:.0f}x"
    )


if __name__ == "__main__":
    main()
