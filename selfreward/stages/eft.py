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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfreward.batches import BatchRun, WorkItem, derive_seed
from selfreward.config import EFTConfig, JudgeConfig, ServerJudgeConfig
from selfreward.engines import server_engine
from selfreward.engines.base import Completion, Engine, Sampling
from selfreward.judging import scale_named
from selfreward.judging.additive_5pt import ADDITIVE_5PT
from selfreward.judging.responses import JudgeItem, PointJudgment, judge_prompt, judge_responses, judgment_stats
from selfreward.judging.scale import Scale
from selfreward.models import resolve_model
from selfreward.overlap import group_rows, normalise_prompt, split_groups
from selfreward.records import StageFiles, write_json, write_jsonl
from selfreward.seed_data import RankedGroup
from selfreward.steps import Tools

HINT = (
    "\n\nA careful reviewer has already settled on a total score of {score} for this response. "
    'Write the justification for exactly that score, in at most 100 words, and end with "{target_line}".'
)
"""rationalize: appended to the judge prompt that asks for the justification (never to a training example's prompt)."""
HINT_SENTENCE = re.compile(r"[^.!?\n]*\b(?:reviewer|already settled|hint)\b[^.!?\n]*[.!?]?", re.IGNORECASE)


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


def target_scores(ranks: list[float], qualities: list[float | None], scale: Scale = ADDITIVE_5PT) -> list[int] | None:
    """Target scores on `scale` (L..H, 0-5 by default) for one group from human data, or None when it
    cannot be ordered.

    With a crowd `quality` label for every response: round(L + 1 + (H - L - 1) * quality) (1 + 4q
    on 0-5). Otherwise by rank position among the group's distinct ranks:
    round(H - 1 - (H - L - 2) * position / (distinct - 1)), i.e. 4 for the best and 1 for the worst
    on 0-5. Then, going down the ranking, each rank's targets are lowered to one below the lowest
    target of any better rank, so the targets agree with the ranking; a group that would need a
    target below L is dropped. Halves round up."""
    low, high = scale.lowest, scale.highest
    distinct = sorted(set(ranks))
    if all(q is not None for q in qualities):
        raw = [int(low + 1 + (high - low - 1) * q + 0.5) for q in qualities]  # type: ignore[operator]
    else:
        span = max(1, len(distinct) - 1)
        raw = [int(high - 1 - (high - low - 2) * distinct.index(r) / span + 0.5) for r in ranks]
    targets = [min(high, max(low, t)) for t in raw]
    ceiling = high + 1
    for rank in distinct:
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i in members:
            targets[i] = min(targets[i], ceiling - 1)
        ceiling = min(targets[i] for i in members)
        if ceiling < low:
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


def up_to_score(judgment: str, scale: Scale = ADDITIVE_5PT) -> str:
    """The judgment cut right after the score statement its score was read from."""
    found = scale.read(judgment)
    return judgment[: found.end].strip() if found else judgment.strip()


@dataclass
class EFTExamples:
    """What one EFT strategy made of the training groups."""

    run: BatchRun
    examples: list[dict[str, Any]]
    groups_kept: int
    judge_stats: dict[str, Any]
    unorderable_groups: int = 0


@dataclass(frozen=True)
class EFTInputs:
    """What every strategy works with: its settings, the judge's, the engine that writes, the groups to learn from."""

    config: EFTConfig
    judge: JudgeConfig
    engine: Engine
    files: StageFiles
    train_rows: list[dict[str, Any]]
    seed: int
    batch_size: int

    @property
    def judgment(self) -> PointJudgment:
        """Written scores only: a target needs a stated score."""
        return PointJudgment.of(scale_named(self.judge.scale), self.judge.template, "off")

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.judge.temperature, self.judge.top_p, self.judge.max_new_tokens)

    def prompt(self, group: dict[str, Any], response_index: int) -> str:
        """The training example's prompt: the judge prompt as the judge stage shows it (fitted to the context)."""
        fields = {"instruction": group["prompt"], "response": group["responses"][response_index]["text"]}
        return judge_prompt(self.engine, self.judgment, fields, self.judge.max_new_tokens)


@dataclass(frozen=True)
class Justification:
    """rationalize: the judge prompt with the target score as a hint; the model writes the
    justification (cleaned of the hint and cut to `max_words`)."""

    template: str
    stop: tuple[str, ...]
    max_words: int
    shorten: tuple[str, ...] = ("response",)

    def rows(self, engine: Engine, items: list[WorkItem], completions: list[Completion]) -> list[dict[str, Any]]:
        return [
            {
                "id": it.id,
                **it.payload,
                "text": c.text,
                "justification": clean_justification(c.text, self.max_words),
                "num_tokens": c.num_tokens,
            }
            for it, c in zip(items, completions)
        ]


def hint_fields(scale: Scale, target: int) -> dict[str, str]:
    """The hint's fields, filled before the answer's text (so an answer that quotes `{score}` stays as it is)."""
    return {"score": str(target), "target_line": scale.target(target)}


def rationalized_examples(c: EFTInputs) -> EFTExamples:
    """`rationalize`: targets from the human ranking; the model writes each target's justification.
    A group whose justifications are not all at least 3 words is left out."""
    scale = c.judgment.scale
    targets: dict[str, list[int]] = {}
    for g in c.train_rows:
        found = target_scores([r["rank"] for r in g["responses"]], [r["quality"] for r in g["responses"]], scale)
        if found is not None:
            targets[g["id"]] = found
    items = [
        JudgeItem(
            f"{g['id']}-r{r}",
            hint_fields(scale, targets[g["id"]][r]) | {"instruction": g["prompt"], "response": resp["text"]},
            {"group_id": g["id"], "response_index": r, "rank": resp["rank"], "target": targets[g["id"]][r]},
        )
        for g in c.train_rows
        if g["id"] in targets
        for r, resp in enumerate(g["responses"])
    ]
    writer = Justification(c.judgment.template + HINT, scale.stop, c.config.max_justification_words)
    run = judge_responses(c.engine, writer, items, 1, c.sampling, c.files, c.seed, c.batch_size, "eft rationalize")
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in run.records:
        by_group[record["group_id"]].append(record)
    examples, kept = [], 0
    for group in c.train_rows:
        records = sorted(by_group.get(group["id"], []), key=lambda x: x["response_index"])
        if not records or any(len(r["justification"].split()) < 3 for r in records):
            continue
        kept += 1
        for record in records:
            completion = f"{record['justification']}\n{scale.target(record['target'])}"
            examples.append(
                {
                    "id": record["id"],
                    "group_id": group["id"],
                    "prompt": c.prompt(group, record["response_index"]),
                    "completion": completion,
                    "score": record["target"],
                }
            )
    judge_stats = {
        "stage": "eft-rationalize",
        "justifications": len(run.records),
        "too_short": sum(1 for r in run.records if len(r["justification"].split()) < 3),
    }
    return EFTExamples(run, examples, kept, judge_stats, unorderable_groups=len(c.train_rows) - len(targets))


def judged_examples(c: EFTInputs) -> EFTExamples:
    """`self` / `teacher`: the judge scores each response `samples` times; a group is kept when some
    choice of one sample per response agrees with the human ranking."""
    items = [
        JudgeItem(
            f"{g['id']}-r{r}-s{k}",
            {"instruction": g["prompt"], "response": resp["text"]},
            {"group_id": g["id"], "response_index": r, "sample": k, "rank": resp["rank"]},
        )
        for g in c.train_rows
        for r, resp in enumerate(g["responses"])
        for k in range(c.config.samples)
    ]
    run = judge_responses(
        c.engine, c.judgment, items, 1, c.sampling, c.files, c.seed, c.batch_size, f"eft {c.config.strategy}"
    )
    by_response: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in run.records:
        by_response[(record["group_id"], record["response_index"])].append(record)
    examples, kept = [], 0
    for group in c.train_rows:
        judged = [
            sorted(by_response[(group["id"], r)], key=lambda x: x["sample"]) for r in range(len(group["responses"]))
        ]
        choice = agreeing_choice(
            [resp["rank"] for resp in group["responses"]], [[j["score"] for j in samples] for samples in judged]
        )
        if choice is None:
            continue
        kept += 1
        for r, k in enumerate(choice):
            record = judged[r][k]
            completion = up_to_score(record["text"], c.judgment.scale)
            examples.append(
                {
                    "id": record["id"],
                    "group_id": group["id"],
                    "prompt": c.prompt(group, r),
                    "completion": completion,
                    "score": record["score"],
                }
            )
    return EFTExamples(run, examples, kept, {"stage": "eft-judge", **judgment_stats(c.judgment.scale, run.records)})


STRATEGIES: dict[str, Callable[[EFTInputs], EFTExamples]] = {
    "self": judged_examples,
    "teacher": judged_examples,
    "rationalize": rationalized_examples,
}
"""How each `eft.strategy` makes its examples (a new strategy: a function here and its name in the config)."""


def build_eft(
    config: EFTConfig,
    judge: JudgeConfig,
    engine: Engine,
    groups: list[RankedGroup],
    excluded_prompts: set[str],
    out_dir: Path,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """Build (or resume) EFT data in `out_dir`: judgments.jsonl, train.jsonl, eval.jsonl, eft.stats.json."""
    train_groups, eval_groups = split_groups(groups, config.eval_fraction, seed)
    excluded = [g for g in train_groups if normalise_prompt(g.prompt) in excluded_prompts]
    train_groups = [g for g in train_groups if normalise_prompt(g.prompt) not in excluded_prompts][: config.max_groups]
    train_rows, eval_rows = group_rows(train_groups), group_rows(eval_groups)
    write_jsonl(out_dir / "eval.jsonl", eval_rows)
    files = StageFiles(out_dir, "judgments")
    started = time.perf_counter()
    made = STRATEGIES[config.strategy](EFTInputs(config, judge, engine, files, train_rows, seed, batch_size))
    examples = made.examples
    before = Counter(str(round(e["score"])) for e in examples)
    if config.downsample:
        examples = downsample_top_score(examples, random.Random(derive_seed(seed, "eft-downsample")))
    write_jsonl(out_dir / "train.jsonl", examples)
    files.finish(
        made.run.records,
        made.judge_stats | {"new_tokens": made.run.new_tokens, "tokens_per_second": made.run.tokens_per_second},
    )
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
    write_json(out_dir / "eft.stats.json", stats)
    return stats


@dataclass(frozen=True)
class BuildEFT:
    """EFT data from the ranked groups -> EFT_DIR/judgments.jsonl, train.jsonl, eval.jsonl, eft.stats.json.
    The judge model writes (`judge_model`, loaded as any model), or with `eft.strategy: teacher` the
    `eft.teacher` (a local model or a server)."""

    name: str
    config: EFTConfig
    judge: JudgeConfig
    judge_model: str
    groups: list[RankedGroup]
    excluded_prompts: set[str]
    out_dir: Path
    seed: int
    batch_size: int

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "eft.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        """The writer is the judge model, or with `eft.strategy: teacher` the teacher: a local model or a server."""
        teacher = self.config.teacher if self.config.strategy == "teacher" else None
        if not isinstance(teacher, ServerJudgeConfig):
            writer = resolve_model(teacher.model) if teacher is not None and teacher.model else self.judge_model
            return self.build(tools.engines.get(writer))
        server = server_engine(teacher)
        try:
            return self.build(server)
        finally:
            server.close()

    def build(self, engine: Engine) -> dict[str, Any]:
        return build_eft(
            self.config,
            self.judge,
            engine,
            self.groups,
            self.excluded_prompts,
            self.out_dir,
            self.seed,
            self.batch_size,
        )
