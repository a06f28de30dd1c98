"""Stage `prompts`: new prompts by few-shot self-instruct, with Self-Instruct's filters.

Each round sends `requests_per_round` requests, each showing 8 shots (6 seed prompts, 2 prompts
generated so far; seed prompts fill in while fewer exist), parses the numbered tasks out of each
completion and filters them: length bounds, keyword blacklist, bad first character, exact and
copies of evaluation prompts (`prompts.decontaminate`, verdict `contaminated`), exact and near
(normalised) duplicates, and ROUGE-L >= threshold to any existing prompt. Every generated task is
kept in `prompts.raw.jsonl` with its verdict; the kept ones go to `prompts.jsonl`.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from selfreward.batches import derive_seed, progress_bar
from selfreward.config import Config, PromptsConfig
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.overlap import EvaluationPrompts, RougePool, rouge_tokens
from selfreward.prompts import fill, load_template
from selfreward.records import StageFiles, read_jsonl, write_jsonl
from selfreward.seed_data import IFTExample
from selfreward.steps import AIFTStep, Column, Iteration, Step, Tools

TASK_MARKER = re.compile(
    r"(?:^|\n)\s*[*#]*\s*(?:Task|Instruction|Prompt|Question)?\s*#?\s*\d{1,3}\s*[:.)]\**\s*", re.IGNORECASE
)
ANSWER_MARKER = re.compile(r"\n\s*[*#]*\s*(?:Answer|Output|Response|Solution|Example output)\s*[:.]", re.IGNORECASE)


def parse_tasks(completion: str, finished: bool) -> list[str]:
    """Numbered tasks out of a completion that continues `Task N:`. A task is its first paragraph
    (answers and chatter after it are cut). When the completion hit the token limit, its last
    task may be cut short and is dropped."""
    parts = [p.strip() for p in TASK_MARKER.split("\n" + completion)]
    tasks = [p for p in parts if p]
    if not finished and tasks:
        tasks = tasks[:-1]
    out = []
    for task in tasks:
        task = ANSWER_MARKER.split("\n" + task)[0].strip().split("\n\n")[0].strip().strip('"').strip()
        if task:
            out.append(re.sub(r"[ \t]+", " ", task))
    return out


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


class PromptFilter:
    """Self-Instruct's filters against a growing pool of existing prompts, and a check against
    evaluation prompts."""

    def __init__(self, config: PromptsConfig, existing: list[str], evaluation_prompts: Iterable[str] = ()):
        self.config = config
        self.evaluation = EvaluationPrompts(config.decontaminate, evaluation_prompts)
        self.pool = RougePool()
        self.seen: set[str] = set()
        self.blacklist = (
            re.compile(r"\b(?:" + "|".join(map(re.escape, config.blacklist)) + r")\b", re.IGNORECASE)
            if config.blacklist
            else None
        )
        for text in existing:
            self.add(text)

    def add(self, text: str) -> None:
        self.pool.add(rouge_tokens(text))
        self.seen.add(normalise(text))

    def reason(self, text: str) -> str | None:
        """Why `text` is rejected, or None when it is kept."""
        words = len(text.split())
        if words < self.config.min_words:
            return "too_short"
        if words > self.config.max_words:
            return "too_long"
        if not text[0].isascii() or not text[0].isalnum():
            return "bad_start"
        if self.blacklist is not None and self.blacklist.search(text):
            return "blacklist"
        if self.evaluation.copied_by(text):
            return "contaminated"
        if normalise(text) in self.seen:
            return "duplicate"
        if self.pool.reaches(rouge_tokens(text), self.config.rouge_threshold):
            return "rouge_similar"
        return None


def build_request(template: str, shots: list[str]) -> Request:
    examples = "\n".join(f"Task {i}: {shot.strip()}" for i, shot in enumerate(shots, 1))
    return Request.user(fill(template, examples=examples, next=str(len(shots) + 1)), prefix=f"Task {len(shots) + 1}:")


def round_requests(
    config: PromptsConfig, template: str, seed_prompts: list[str], generated: list[str], rng: random.Random
) -> list[Request]:
    """One round's few-shot requests: `generated_shots` kept prompts (fewer while there are fewer)
    and seed prompts for the rest of the shots."""
    requests = []
    for _ in range(config.requests_per_round):
        n_gen = min(config.generated_shots, len(generated))
        n_seed = min(config.seed_shots + config.generated_shots - n_gen, len(seed_prompts))
        requests.append(build_request(template, rng.sample(seed_prompts, n_seed) + rng.sample(generated, n_gen)))
    return requests


def screen_tasks(
    rnd: int, completions: list[Completion], flt: PromptFilter, kept: list[dict[str, Any]], quota: int
) -> list[dict[str, Any]]:
    """The round's raw rows, one per parsed task, each kept (appended to `kept`) or given the
    filter's reason; a round that parsed nothing still gets a row, so a resume moves on."""
    rows = []
    for req_index, completion in enumerate(completions):
        for task_index, text in enumerate(parse_tasks(completion.text, completion.finished)):
            row = {"id": f"r{rnd:03d}-{req_index:02d}-{task_index:02d}", "round": rnd, "prompt": text}
            why = flt.reason(text) if len(kept) < quota else "over_quota"
            if why is None:
                flt.add(text)
                row |= {"status": "kept", "prompt_id": f"p{len(kept):05d}"}
                kept.append(row)
            else:
                row |= {"status": why}
            rows.append(row)
    return rows or [{"id": f"r{rnd:03d}-none", "round": rnd, "prompt": "", "status": "no_tasks_parsed"}]


def prompt_stats(
    config: PromptsConfig,
    raw: list[dict[str, Any]],
    records: list[dict[str, Any]],
    rounds: int,
    seed_prompts: int,
    new_tokens: int,
    seconds: float,
) -> dict[str, Any]:
    verdicts = Counter(r["status"] for r in raw if r["status"] != "no_tasks_parsed")
    stats = {
        "stage": "prompts",
        "prompts_kept": len(records),
        "prompts_requested": config.num_prompts,
        "rounds": rounds,
        "requests": rounds * config.requests_per_round,
        "tasks_parsed": sum(verdicts.values()),
        "verdicts": dict(sorted(verdicts.items())),
        "keep_rate": round(len(records) / max(1, sum(verdicts.values()) - verdicts["over_quota"]), 3),
        "seed_prompts": seed_prompts,
        "mean_prompt_words": round(sum(len(r["prompt"].split()) for r in records) / max(1, len(records)), 1),
        "new_tokens": new_tokens,
        "tokens_per_second": round(new_tokens / seconds, 1) if new_tokens and seconds > 0 else None,
    }
    if len(records) < config.num_prompts:
        stats["warning"] = (
            f"only {len(records)} of {config.num_prompts} prompts after {config.max_rounds} rounds (prompts.max_rounds)"
        )
    return stats


def generate_prompts(
    config: PromptsConfig,
    engine: Engine,
    seed_prompts: list[str],
    evaluation_prompts: list[str],
    out_dir: Path,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """Run (or resume) the stage into `out_dir`; returns its stats. Prompts copying one of
    `evaluation_prompts` are rejected as `contaminated`."""
    files = StageFiles(out_dir, "prompts")
    template = fill(load_template("self_instruct"), count=str(config.tasks_per_request))
    raw_path = out_dir / "prompts.raw.jsonl"  # written just before the final files
    raw = read_jsonl(raw_path) if raw_path.exists() else files.load_progress()
    kept = [r for r in raw if r["status"] == "kept"]
    flt = PromptFilter(config, seed_prompts + [r["prompt"] for r in kept], evaluation_prompts)
    sampling = Sampling(config.temperature, config.top_p, config.max_new_tokens)
    first_round = max((r["round"] for r in raw), default=-1) + 1
    started, new_tokens = time.perf_counter(), 0
    rounds = first_round
    with progress_bar() as bar:
        task = bar.add_task("prompts", total=config.num_prompts, completed=len(kept), rate="")
        for rnd in range(first_round, config.max_rounds):
            if len(kept) >= config.num_prompts:
                break
            rng = random.Random(derive_seed(seed, f"prompts-round-{rnd}"))
            requests = round_requests(config, template, seed_prompts, [r["prompt"] for r in kept], rng)
            completions = []
            for start in range(0, len(requests), batch_size):
                completions += engine.generate(
                    requests[start : start + batch_size], sampling, derive_seed(seed, f"prompts-{rnd}-{start}")
                )
            new_tokens += sum(c.num_tokens for c in completions)
            rows = screen_tasks(rnd, completions, flt, kept, config.num_prompts)
            files.append(rows)
            raw += rows
            rounds = rnd + 1
            bar.update(
                task, completed=len(kept), rate=f"{new_tokens / max(time.perf_counter() - started, 1e-9):.0f} tok/s"
            )
    records = [
        {"id": r["prompt_id"], "prompt": r["prompt"], "round": r["round"], "source": "self-instruct"} for r in kept
    ]
    stats = prompt_stats(config, raw, records, rounds, len(seed_prompts), new_tokens, time.perf_counter() - started)
    write_jsonl(raw_path, raw)
    files.finish(records, stats)
    return stats


REFERENCE_ANSWER = "reference_answer"
"""spin: the field of a prompts.jsonl row holding the human answer to the prompt."""


def spin_prompts(examples: list[IFTExample], count: int, seed: int) -> list[dict[str, Any]]:
    """For `spin`: prompts.jsonl rows of `count` IFT examples drawn with `seed`, each with its human answer."""
    drawn = sorted(random.Random(seed).sample(range(len(examples)), min(count, len(examples))))
    return [
        {
            "id": f"ift{i:06d}",
            "prompt": examples[i].prompt,
            "round": 0,
            "source": "ift",
            REFERENCE_ANSWER: examples[i].response,
        }
        for i in drawn
    ]


@dataclass(frozen=True)
class Prompts(AIFTStep):
    """New prompts by few-shot self-instruct -> ITER/prompts.jsonl (every generated task with its
    verdict in prompts.raw.jsonl); with `pairs.policy: spin`, IFT prompts instead (`IFTPrompts`)."""

    name: str
    config: PromptsConfig
    out_dir: Path
    generator: str
    seed_prompts: list[str]
    evaluation_prompts: list[str]
    seed: int
    batch_size: int
    stage: ClassVar[str] = "prompts"
    files: ClassVar[str] = "prompts"
    columns: ClassVar[tuple[Column, ...]] = (Column("prompts", "prompts_kept"),)
    uses_seed_data: ClassVar[bool] = True

    @staticmethod
    def uses_model(config: Config) -> bool:
        return not (config.prompts.generator or config.pairs.policy == "spin")

    @classmethod
    def build(cls, it: Iteration) -> Step:
        if it.config.pairs.policy == "spin":
            return IFTPrompts(
                it.step_name("prompts"), it.out_dir, it.ift_examples, it.config.prompts.num_prompts, it.seed("prompts")
            )
        seeds = [e.prompt for e in it.ift_examples]
        return cls(
            it.step_name("prompts"),
            it.config.prompts,
            it.out_dir,
            it.generator,
            seeds,
            it.evaluation_prompts,
            it.seed("prompts"),
            it.batch_size,
        )

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "prompts.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        return generate_prompts(
            self.config,
            tools.engines.get(self.generator),
            self.seed_prompts,
            self.evaluation_prompts,
            self.out_dir,
            self.seed,
            self.batch_size,
        )


@dataclass(frozen=True)
class IFTPrompts:
    """spin: `count` seed IFT prompts drawn anew each iteration (seeded by run and iteration), each with
    its human answer (`reference_answer`) -> ITER/prompts.jsonl."""

    name: str
    out_dir: Path
    examples: list[IFTExample]
    count: int
    seed: int

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "prompts.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        rows = spin_prompts(self.examples, self.count, self.seed)
        stats = {
            "stage": "prompts",
            "source": "ift",
            "prompts_kept": len(rows),
            "prompts_requested": self.count,
            "ift_examples": len(self.examples),
        }
        StageFiles(self.out_dir, "prompts").finish(rows, stats)
        return stats
