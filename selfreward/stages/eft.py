"""Stage `eft`: evaluation fine-tuning data from human-ranked groups.

Ranked prompts are split by prompt into train and eval (the eval part is the reward-modelling
test set); prompts of `eft.exclude_prompts_from` never enter training. Then, per strategy:

- `self` (the paper): the judge model writes `samples` judgments per response; a group is kept
  when some choice of one sample per response agrees with the human ranking.
- `teacher`: the same, with judgments from another model or an OpenAI-compatible server.
- `rationalize`: each response gets a target score from the human data (`target_scores`); the
  judge model, shown the target as a hint, writes the justification; the training example is the
  plain judge prompt -> justification + `Score: target` (the hint never appears in it).

Agreement: for every two responses with different human ranks, the better-ranked one has the
strictly higher score (a score tie counts as disagreement; responses tied in human rank may score
in any order). Finally the most frequent score is down-sampled to the count of the second most
frequent. A kept example is the judge prompt -> the judgment up to its score.
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfreward.batches import BatchRun, WorkItem, derive_seed, run_batches
from selfreward.config import EFTConfig, JudgeConfig
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.records import StageFiles, write_json, write_jsonl
from selfreward.seed import RankedGroup
from selfreward.stages.judge import judge_request, judge_template, judgment_stats, read_text_score, score_completions

HINT = (
    "\n\nA careful reviewer has already settled on a total score of {score} for this response. "
    'Write the justification for exactly that score, in at most 100 words, and end with "Score: {score}".'
)
HINT_SENTENCE = re.compile(r"[^.!?\n]*\b(?:reviewer|already settled|hint)\b[^.!?\n]*[.!?]?", re.IGNORECASE)


def normalise_prompt(text: str) -> str:
    return " ".join(text.lower().split())


def split_groups(groups: list[RankedGroup], eval_fraction: float, seed: int) -> tuple[list[RankedGroup], list[RankedGroup]]:
    """Deterministic split by prompt text: the same prompt always lands on the same side."""
    train: list[RankedGroup] = []
    held_out: list[RankedGroup] = []
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


def agreeing_choice(ranks: list[float], samples: list[list[float | None]]) -> list[int] | None:
    """One sample index per response whose scores agree with the ranking (first in sample order), or None."""
    options = [[k for k, score in enumerate(scores) if score is not None] for scores in samples]
    for combo in itertools.product(*options):
        if agrees_with_ranking(ranks, [samples[i][k] for i, k in enumerate(combo)]):
            return list(combo)
    return None


def target_scores(ranks: list[float], qualities: list[float | None]) -> list[int] | None:
    """Target scores (0-5) for one group from human data, or None when it cannot be ordered.

    With a crowd `quality` label for every response: round(1 + 4 * quality). Otherwise by rank
    position among the group's distinct ranks: round(4 - 3 * position / (distinct - 1)), i.e.
    4 for the best and 1 for the worst. Then, going down the ranking, each rank's targets are
    lowered to one below the lowest target of any better rank, so the targets agree with the
    ranking; a group that would need a target below 0 is dropped. Halves round up."""
    distinct = sorted(set(ranks))
    if all(q is not None for q in qualities):
        raw = [int(1 + 4 * q + 0.5) for q in qualities]  # type: ignore[operator]
    else:
        span = max(1, len(distinct) - 1)
        raw = [int(4 - 3 * distinct.index(r) / span + 0.5) for r in ranks]
    targets = [min(5, max(0, t)) for t in raw]
    ceiling = 6
    for rank in distinct:
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i in members:
            targets[i] = min(targets[i], ceiling - 1)
        ceiling = min(targets[i] for i in members)
        if ceiling < 0:
            return None
    return targets


def clean_justification(text: str, max_words: int = 100) -> str:
    """The justification part of a hinted judgment: before its first score statement, without any
    sentence that mentions the hint, cut to `max_words` (at a sentence end when one is near)."""
    body = re.split(r"(?i)\b(?:total\s+)?score\s*[:=]", text)[0]
    body = " ".join(HINT_SENTENCE.sub("", body).split())
    words = body.split()
    if len(words) > max_words:
        body = " ".join(words[:max_words])
        cut = body.rfind(". ")
        body = body[: cut + 1] if cut > len(body) // 2 else body
    return body.strip()


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
    """The judgment cut right after the score statement its score was read from."""
    found = read_text_score(judgment)
    return judgment[: found.end].strip() if found else judgment.strip()


def group_rows(groups: list[RankedGroup]) -> list[dict[str, Any]]:
    return [
        {"id": f"g{i:05d}", "source_id": g.group_id, "prompt": g.prompt, "responses": [{"text": r.text, "rank": r.rank, "quality": r.quality} for r in g.responses]}
        for i, g in enumerate(groups)
    ]


def _judged_examples(records: list[dict[str, Any]], train_rows: list[dict[str, Any]], template: str) -> tuple[list[dict[str, Any]], int]:
    """self/teacher: per group, one agreeing sample per response (or nothing)."""
    by_response: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_response[(record["group_id"], record["response_index"])].append(record)
    examples, kept = [], 0
    for group in train_rows:
        judged = [sorted(by_response[(group["id"], r)], key=lambda x: x["sample"]) for r in range(len(group["responses"]))]
        choice = agreeing_choice([resp["rank"] for resp in group["responses"]], [[j["score"] for j in samples] for samples in judged])
        if choice is None:
            continue
        kept += 1
        for r, k in enumerate(choice):
            record = judged[r][k]
            prompt = judge_request(template, group["prompt"], group["responses"][r]["text"]).messages[0][1]
            examples.append({"id": record["id"], "group_id": group["id"], "prompt": prompt, "completion": up_to_score(record["text"]), "score": record["score"]})
    return examples, kept


@dataclass
class EFTExamples:
    """What one EFT strategy made of the training groups."""

    run: BatchRun
    examples: list[dict[str, Any]]
    groups_kept: int
    judge_stats: dict[str, Any]
    unorderable_groups: int = 0


def rationalized_examples(config: EFTConfig, template: str, engine: Engine, files: StageFiles, train_rows: list[dict[str, Any]], sampling: Sampling, seed: int, batch_size: int) -> EFTExamples:
    """`rationalize`: targets from the human ranking; the model writes each target's justification.
    A group whose justifications are not all at least 3 words is left out."""
    targets: dict[str, list[int]] = {}
    for g in train_rows:
        found = target_scores([r["rank"] for r in g["responses"]], [r["quality"] for r in g["responses"]])
        if found is not None:
            targets[g["id"]] = found
    items = [
        WorkItem(
            f"{g['id']}-r{r}",
            Request.user(judge_request(template, g["prompt"], resp["text"]).messages[0][1] + HINT.replace("{score}", str(targets[g["id"]][r]))),
            {"group_id": g["id"], "response_index": r, "rank": resp["rank"], "target": targets[g["id"]][r]},
        )
        for g in train_rows
        if g["id"] in targets
        for r, resp in enumerate(g["responses"])
    ]

    def finish(batch: list[WorkItem], completions: list[Completion]) -> list[dict[str, Any]]:
        return [{"id": it.id, **it.payload, "text": c.text, "justification": clean_justification(c.text, config.max_justification_words), "num_tokens": c.num_tokens} for it, c in zip(batch, completions)]

    run = run_batches(files, items, engine, sampling, seed, batch_size, "eft rationalize", finish)
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in run.records:
        by_group[record["group_id"]].append(record)
    examples, kept = [], 0
    for group in train_rows:
        records = sorted(by_group.get(group["id"], []), key=lambda x: x["response_index"])
        if not records or any(len(r["justification"].split()) < 3 for r in records):
            continue
        kept += 1
        for record in records:
            prompt = judge_request(template, group["prompt"], group["responses"][record["response_index"]]["text"]).messages[0][1]
            examples.append({"id": record["id"], "group_id": group["id"], "prompt": prompt, "completion": f"{record['justification']}\nScore: {record['target']}", "score": record["target"]})
    judge_stats = {"stage": "eft-rationalize", "justifications": len(run.records), "too_short": sum(1 for r in run.records if len(r["justification"].split()) < 3)}
    return EFTExamples(run, examples, kept, judge_stats, unorderable_groups=len(train_rows) - len(targets))


def judged_examples(config: EFTConfig, judge: JudgeConfig, template: str, engine: Engine, files: StageFiles, train_rows: list[dict[str, Any]], sampling: Sampling, seed: int, batch_size: int) -> EFTExamples:
    """`self` / `baseline`: the judge scores each response `samples` times; judgments agreeing with
    the human ranking become the targets."""
    items = [
        WorkItem(f"{g['id']}-r{r}-s{k}", judge_request(template, g["prompt"], resp["text"]), {"group_id": g["id"], "response_index": r, "sample": k, "rank": resp["rank"]})
        for g in train_rows
        for r, resp in enumerate(g["responses"])
        for k in range(config.samples)
    ]
    text_only = judge.model_copy(update={"fallback": "off"})  # a target needs a written score
    run = run_batches(files, items, engine, sampling, seed, batch_size, f"eft {config.strategy}", lambda b, c: score_completions(text_only, engine, b, c))
    examples, kept = _judged_examples(run.records, train_rows, template)
    return EFTExamples(run, examples, kept, {"stage": "eft-judge", **judgment_stats(run.records)})


def build_eft(
    config: EFTConfig, judge: JudgeConfig, engine: Engine, groups: list[RankedGroup], excluded_prompts: set[str], out_dir: Path, seed: int, batch_size: int
) -> dict[str, Any]:
    """Build (or resume) EFT data in `out_dir`: judgments.jsonl, train.jsonl, eval.jsonl, eft.stats.json."""
    done = out_dir / "eft.stats.json"
    if done.exists():
        return StageFiles(out_dir, "eft").read_stats()
    train_groups, eval_groups = split_groups(groups, config.eval_fraction, seed)
    excluded = [g for g in train_groups if normalise_prompt(g.prompt) in excluded_prompts]
    train_groups = [g for g in train_groups if normalise_prompt(g.prompt) not in excluded_prompts][: config.max_groups]
    train_rows, eval_rows = group_rows(train_groups), group_rows(eval_groups)
    write_jsonl(out_dir / "eval.jsonl", eval_rows)
    template = judge_template(judge.template)
    sampling = Sampling(judge.temperature, judge.top_p, judge.max_new_tokens)
    files = StageFiles(out_dir, "judgments")
    started = time.perf_counter()
    if config.strategy == "rationalize":
        made = rationalized_examples(config, template, engine, files, train_rows, sampling, seed, batch_size)
    else:
        made = judged_examples(config, judge, template, engine, files, train_rows, sampling, seed, batch_size)
    examples = made.examples
    before = Counter(str(round(e["score"])) for e in examples)
    if config.downsample:
        examples = downsample_top_score(examples, random.Random(derive_seed(seed, "eft-downsample")))
    write_jsonl(out_dir / "train.jsonl", examples)
    files.finish(made.run.records, made.judge_stats | {"new_tokens": made.run.new_tokens, "tokens_per_second": made.run.tokens_per_second})
    stats = {
        "stage": "eft",
        "strategy": config.strategy,
        "ranked_groups": len(groups),
        "eval_groups": len(eval_rows),
        "excluded_groups": len(excluded),
        "train_groups_tried": len(train_rows),
        "train_groups_kept": made.groups_kept,
        "unorderable_groups": made.unorderable_groups,
        "group_yield": round(made.groups_kept / len(train_rows), 3) if train_rows else None,
        "judge_parse_rate": made.judge_stats.get("parse_rate_text"),
        "examples_before_downsampling": dict(sorted(before.items())),
        "examples": len(examples),
        "examples_per_score": dict(sorted(Counter(str(round(e["score"])) for e in examples).items())),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(done, stats)
    return stats
