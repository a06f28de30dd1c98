"""Stage `eft`: evaluation fine-tuning data from human-ranked groups, as in the paper.

Ranked prompts are split by prompt into train and eval (the eval part is the reward-modelling
test set). For every response of a train group the judge model writes a judgment with the
additive 5-point prompt; a group's examples are kept only when the order of their scores agrees
with the human ranking: for every two responses with different human ranks, the better-ranked
one must get the strictly higher score (a score tie counts as disagreement; responses tied in
human rank may score in any order). Then the most frequent score is down-sampled to the count of
the second most frequent. A kept example is the judge prompt -> the judgment up to its score.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from selfreward.config import EFTConfig, JudgeConfig
from selfreward.engines.base import Engine, Sampling
from selfreward.records import StageFiles, write_json, write_jsonl
from selfreward.seed import RankedGroup
from selfreward.stages.common import WorkItem, derive_seed, run_batches
from selfreward.stages.judge import SCORE_RE, judge_request, judge_template, judgment_stats, score_completions


def split_groups(groups: list[RankedGroup], eval_fraction: float, seed: int) -> tuple[list[RankedGroup], list[RankedGroup]]:
    """Deterministic split by prompt text: the same prompt always lands on the same side."""
    train, held_out = [], []
    for group in groups:
        side = derive_seed(seed, "eft-split:" + group.prompt) / 2**31 < eval_fraction
        (held_out if side else train).append(group)
    return train, held_out


def agrees_with_ranking(ranks: list[float], scores: list[float | None]) -> bool:
    """True when every pair with different human ranks is scored in the same strict order."""
    if any(s is None for s in scores):
        return False
    for i in range(len(ranks)):
        for j in range(len(ranks)):
            if ranks[i] < ranks[j] and not scores[i] > scores[j]:  # type: ignore[operator]
                return False
    return True


def downsample_top_score(examples: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Cut the most frequent (rounded) score down to the count of the second most frequent."""
    by_score: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for example in examples:
        by_score[round(example["score"])].append(example)
    if len(by_score) < 2:
        return examples
    (top, _), (_, second) = Counter({s: len(v) for s, v in by_score.items()}).most_common(2)
    keep = set(map(id, rng.sample(by_score[top], second)))
    return [e for e in examples if round(e["score"]) != top or id(e) in keep]


def up_to_score(judgment: str) -> str:
    """The judgment cut right after its last `Score: N`."""
    last = list(SCORE_RE.finditer(judgment))[-1]
    return judgment[: last.end()].strip()


def group_rows(groups: list[RankedGroup]) -> list[dict[str, Any]]:
    return [
        {"id": f"g{i:05d}", "source_id": g.group_id, "prompt": g.prompt, "responses": [{"text": r.text, "rank": r.rank, "quality": r.quality} for r in g.responses]}
        for i, g in enumerate(groups)
    ]


def build_eft(config: EFTConfig, judge: JudgeConfig, engine: Engine, groups: list[RankedGroup], out_dir: Path, seed: int, batch_size: int) -> dict[str, Any]:
    """Judge the train groups with `engine`, keep agreeing groups, write train/eval files; returns stats."""
    done = out_dir / "eft.stats.json"
    if done.exists():
        return StageFiles(out_dir, "eft").read_stats()
    train_groups, eval_groups = split_groups(groups, config.eval_fraction, seed)
    if config.max_groups:
        train_groups = train_groups[: config.max_groups]
    train_rows, eval_rows = group_rows(train_groups), group_rows(eval_groups)
    write_jsonl(out_dir / "eval.jsonl", eval_rows)
    template = judge_template(judge.template)
    items = [
        WorkItem(f"{g['id']}-r{r}", judge_request(template, g["prompt"], resp["text"]), {"group_id": g["id"], "response_index": r, "rank": resp["rank"]})
        for g in train_rows
        for r, resp in enumerate(g["responses"])
    ]
    no_fallback = judge.model_copy(update={"fallback": "off"})  # a target needs a written score
    files = StageFiles(out_dir, "judgments")
    started = time.perf_counter()
    run = run_batches(
        files, items, engine, Sampling(judge.temperature, judge.top_p, judge.max_new_tokens), seed, batch_size, "eft judge",
        lambda b, c: score_completions(no_fallback, engine, b, c),
    )
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in run.records:
        by_group[record["group_id"]].append(record)
    examples = []
    kept_groups = 0
    for group in train_rows:
        judged = sorted(by_group[group["id"]], key=lambda r: r["response_index"])
        if agrees_with_ranking([r["rank"] for r in judged], [r["score"] for r in judged]):
            kept_groups += 1
            examples += [
                {"id": r["id"], "group_id": group["id"], "prompt": judge_request(template, group["prompt"], group["responses"][r["response_index"]]["text"]).messages[0][1], "completion": up_to_score(r["text"]), "score": r["score"]}
                for r in judged
            ]
    before = Counter(str(round(e["score"])) for e in examples)
    if config.downsample:
        examples = downsample_top_score(examples, random.Random(derive_seed(seed, "eft-downsample")))
    write_jsonl(out_dir / "train.jsonl", examples)
    files.finish(run.records, {"stage": "eft-judge", **judgment_stats(run.records), "new_tokens": run.new_tokens, "tokens_per_second": run.tokens_per_second})
    stats = {
        "stage": "eft",
        "ranked_groups": len(groups),
        "eval_groups": len(eval_rows),
        "train_groups_tried": len(train_rows),
        "train_groups_kept": kept_groups,
        "group_yield": round(kept_groups / len(train_rows), 3) if train_rows else None,
        "judge_parse_rate": judgment_stats(run.records)["parse_rate_text"],
        "examples_before_downsampling": dict(sorted(before.items())),
        "examples": len(examples),
        "examples_per_score": dict(sorted(Counter(str(round(e["score"])) for e in examples).items())),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(done, stats)
    return stats
