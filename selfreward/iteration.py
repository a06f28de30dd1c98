"""One AIFT iteration as a declared list of stages.

Each `Stage` names the files whose stats mark it done (`NAME.stats.json` in the iteration
directory), the function that makes them from a `Context`, whether the config enables it, and
the figures the run summary shows from its stats. `run_aift` (selfreward.aift) runs the enabled
stages in order, the run summary and report read their stats: a new stage is its module, its
config section, and here a line in `AIFT_STAGES` with the adapter that hands it what it needs
from the `Context`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from selfreward.config import Config
from selfreward.engines import Engine, make_engine
from selfreward.errors import SelfRewardError
from selfreward.models import resolve_model
from selfreward.pair_policies import SCORELESS
from selfreward.records import StageFiles, write_json
from selfreward.seed import IFTExample
from selfreward.stages import meta_judge
from selfreward.stages.candidates import generate_candidates
from selfreward.stages.common import derive_seed
from selfreward.stages.consistency import PREVIOUS_DIR, consistency_stats
from selfreward.stages.implicit_judge import implicit_judge
from selfreward.stages.judge import judge_candidates
from selfreward.stages.pairs import ANCHOR_DIR, make_pairs, spin_prompts
from selfreward.stages.prompts import generate_prompts


class EngineCache:
    """Loads each model once and only when a stage needs it."""

    def __init__(self, config: Config):
        self.config = config
        self.engines: dict[str, Engine] = {}

    def get(self, name_or_path: str) -> Engine:
        if name_or_path not in self.engines:
            self.close()
            self.engines = {name_or_path: make_engine(self.config, name_or_path)}
        return self.engines[name_or_path]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.engines = {}


@dataclass(frozen=True)
class Lineage:
    """Where M_t comes from, for the stages that compare it with other models (empty: not known)."""

    initial: str = ""
    """The model the loop starts from (M1 in `selfreward run`): the anchor of `pairs.policy anchored`."""
    trained_from: str = ""
    """The model M_t was trained from (M0 for M1; DPO's reference for later ones): pi_ref of the implicit judge."""
    previous: str = ""
    """M_{t-1} (M0 for M1): the second judge of `dpo.label_smoothing: cream`."""
    previous_trained_from: str = ""
    """The model M_{t-1} was trained from (none for M0): its pi_ref as an implicit judge."""


@dataclass
class Context:
    """What a stage works with: the config, the iteration directory, the model being improved."""

    config: Config
    out_dir: Path
    model: str
    """Resolved path of the model M_t (empty when no selected stage uses it)."""
    generator: str
    """The model that writes new prompts (`prompts.generator`, else `model`)."""
    tag: str
    engines: EngineCache
    ift_examples: list[IFTExample] = field(default_factory=list)
    """The seed IFT examples (disjoint from the EFT and evaluation data)."""
    evaluation_prompts: list[str] = field(default_factory=list)
    iteration: int = 1
    """1-based number of the iteration (selects `pairs.rho`)."""
    lineage: Lineage = Lineage()

    def seed(self, stage: str) -> int:
        return derive_seed(self.config.seed, f"{self.tag}-{stage}")

    def engine(self) -> Engine:
        return self.engines.get(self.model)

    @property
    def batch_size(self) -> int:
        return self.config.engine.batch_size


@dataclass(frozen=True)
class Column:
    """One figure of the run summary: `stat` of a stage's stats (a dotted path into nested stats),
    shown as `title`, stored as `key`; `percent`: a share shown in % (an interval estimate too)."""

    title: str
    stat: str
    key: str = ""
    percent: bool = False

    @property
    def name(self) -> str:
        return self.key or self.stat.replace(".", "_")

    def read(self, stats: dict[str, Any]) -> Any:
        value: Any = stats
        for part in self.stat.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value


def always(config: Config) -> bool:
    return True


def never(config: Config) -> bool:
    return False


@dataclass(frozen=True)
class Stage:
    name: str
    """The stage's name on the command line and in results (`selfreward judge`, stats per stage)."""
    files: str
    """Name of its files in the iteration directory; `FILES.stats.json` marks it done."""
    work: Callable[[Context], dict[str, Any]]
    columns: tuple[Column, ...] = ()
    """The figures of its stats the run summary and report show."""
    enabled: Callable[[Config], bool] = always
    """Whether `run_aift` runs it by default (a stage named on the command line runs anyway)."""
    uses_model: Callable[[Config], bool] = never
    """Whether it needs the model M_t (resolved before any stage starts)."""
    uses_seed_data: bool = False
    """Whether it needs the seed prompts (loaded and checked before any stage starts)."""


def uses_spin(config: Config) -> bool:
    return config.pairs.policy == "spin"


REFERENCE_ANSWER = "reference_answer"
"""spin: the field of a prompts.jsonl row holding the human answer to the prompt."""


def _ift_prompts(c: Context) -> dict[str, Any]:
    """spin: `prompts.num_prompts` IFT prompts drawn per iteration, each with its human answer."""
    rows, answers = spin_prompts(c.ift_examples, c.config.prompts.num_prompts, c.seed("prompts"))
    stats = {"stage": "prompts", "source": "ift", "prompts_kept": len(rows), "prompts_requested": c.config.prompts.num_prompts, "ift_examples": len(c.ift_examples)}
    StageFiles(c.out_dir, "prompts").finish([r | {REFERENCE_ANSWER: answers[r["id"]]} for r in rows], stats)
    return stats


def _prompts(c: Context) -> dict[str, Any]:
    """Self-instruct prompts, or with spin IFT prompts (`selfreward prompts` makes what the run uses)."""
    if uses_spin(c.config):
        return _ift_prompts(c)
    seeds = [e.prompt for e in c.ift_examples]
    return generate_prompts(c.config.prompts, c.engines.get(c.generator), seeds, c.evaluation_prompts, c.out_dir, c.seed("prompts"), c.batch_size)


def _candidates(c: Context) -> dict[str, Any]:
    return generate_candidates(c.config.candidates, c.engine, c.out_dir, c.seed("candidates"), c.batch_size)


def judge_in(c: Context, out_dir: Path, stage: str, model: str = "", trained_from: str = "") -> dict[str, Any]:
    """The candidates in `out_dir` judged by `model` (default M_t): written judgments, or with
    `judge.kind: implicit` the model's implicit reward against `trained_from` (default: M_t's)."""
    model = model or c.model
    if c.config.judge.kind == "implicit":
        reference = c.config.judge.reference or trained_from or c.lineage.trained_from
        if not reference:
            raise SelfRewardError("judge.kind implicit needs judge.reference (the model M_t was trained from) when the judge runs on its own")
        c.engines.close()  # the two models are loaded one at a time, in full precision
        return implicit_judge(c.config.judge, c.config.model, model, resolve_model(reference), out_dir)
    return judge_candidates(c.config.judge, partial(c.engines.get, model), out_dir, c.seed(stage), c.batch_size)


def _judge(c: Context) -> dict[str, Any]:
    return judge_in(c, c.out_dir, "judge")


def _anchor(c: Context) -> dict[str, Any]:
    """anchored: the initial model answers the iteration's prompts (in ITER/anchor), M_t judges them."""
    anchor_dir = c.out_dir / ANCHOR_DIR
    anchor_dir.mkdir(exist_ok=True)
    shutil.copyfile(c.out_dir / "prompts.jsonl", anchor_dir / "prompts.jsonl")
    initial = resolve_model(c.lineage.initial or c.config.model.name_or_path)
    load_initial = partial(c.engines.get, initial)
    seed = c.seed("anchor-candidates")
    answered = generate_candidates(c.config.candidates, load_initial, anchor_dir, seed, c.batch_size)
    judged = judge_in(c, anchor_dir, "anchor-judge")
    stats = {"stage": "anchor", "model": initial, "candidates": answered["candidates"], "truncated": answered["truncated"], "judgments": judged["judgments"], "valid_rate": judged["valid_rate"], "mean_score": judged["mean_score"]}
    write_json(c.out_dir / "anchor.stats.json", stats)
    return stats


def _consistency(c: Context) -> dict[str, Any]:
    """cream: M_{t-1} judges M_t's candidates too (in ITER/previous); their rank agreement sets DPO's label smoothing."""
    previous_dir = c.out_dir / PREVIOUS_DIR
    previous = c.lineage.previous
    usable = previous and (c.config.judge.kind == "text" or c.lineage.previous_trained_from or c.config.judge.reference)
    if usable:
        previous_dir.mkdir(exist_ok=True)
        shutil.copyfile(c.out_dir / "candidates.jsonl", previous_dir / "candidates.jsonl")
        judge_in(c, previous_dir, "previous-judge", resolve_model(previous), c.lineage.previous_trained_from)
    stats = consistency_stats(c.out_dir, previous_dir if usable else None, previous or None)
    write_json(c.out_dir / "consistency.stats.json", stats)
    return stats


def _pairs(c: Context) -> dict[str, Any]:
    answers = {r["id"]: r[REFERENCE_ANSWER] for r in StageFiles(c.out_dir, "prompts").read() if REFERENCE_ANSWER in r} if uses_spin(c.config) else None
    return make_pairs(c.config.pairs, c.out_dir, c.iteration, answers)


def _meta(c: Context) -> dict[str, Any]:
    return meta_judge.run_meta_judge(c.config.meta, c.config.judge, c.engine, c.out_dir, c.seed("meta"), c.batch_size)


AIFT_STAGES: tuple[Stage, ...] = (
    Stage("prompts", "prompts", _prompts, (Column("prompts", "prompts_kept"),), uses_model=lambda config: not (config.prompts.generator or uses_spin(config)), uses_seed_data=True),
    Stage("candidates", "candidates", _candidates, (Column("candidates", "candidates"), Column("answer tokens", "mean_tokens", "candidate_mean_tokens")), uses_model=always),
    Stage("judge", "judgments", _judge, (Column("judge parse", "parse_rate_text", "judge_parse_rate"), Column("judge valid", "valid_rate", "judge_valid_rate"), Column("top-score share", "top_score_share")), enabled=lambda config: config.pairs.policy not in SCORELESS, uses_model=always),
    Stage("consistency", "consistency", _consistency, (Column("judge agreement tau", "tau_mean", "consistency_tau"), Column("label smoothing", "label_smoothing")),
          enabled=lambda config: config.dpo.label_smoothing == "cream", uses_model=always),
    Stage("anchor", "anchor", _anchor, (Column("anchor score", "mean_score", "anchor_mean_score"),), enabled=lambda config: config.pairs.policy == "anchored", uses_model=always),
    Stage("pairs", "pairs", _pairs, (Column("pairs", "pairs"), Column("pair yield", "pair_yield"), Column("mean margin", "mean_margin"), Column("chosen length", "mean_chosen_length"), Column("rejected length", "mean_rejected_length"))),
    Stage("meta", "meta", _meta, (Column("judge pairs", "judge_pairs"), Column("meta agreement", "order_agreement", "meta_order_agreement")), enabled=lambda config: config.meta.enabled, uses_model=always),
)
"""The AIFT stages in the order they run."""

DPO_COLUMNS = (
    Column("DPO loss", "train_loss", "dpo_loss"),
    Column("DPO reward acc", "reward_accuracies_mean", "dpo_reward_accuracy"),
    Column("DPO margin", "reward_margins_mean", "dpo_reward_margin"),
    Column("DPO steps", "steps", "dpo_steps"),
)
"""Figures of `dpo{t}/dpo.stats.json` in the run summary."""

VALIDATION_COLUMNS = (
    Column("DPO val acc before %", "before.accuracy", "dpo_validation_accuracy_before", percent=True),
    Column("DPO val acc after %", "after.accuracy", "dpo_validation_accuracy_after", percent=True),
    Column("DPO val margin after", "after.margin", "dpo_validation_margin_after"),
    Column("DPO val pairs", "pairs", "dpo_validation_pairs"),
)
"""Figures of `dpo{t}/validation.stats.json` (held-out pairs, 95% intervals) in the run summary."""


def enabled_stages(config: Config, names: tuple[str, ...] | None = None) -> list[Stage]:
    """The stages to run in their declared order: those named, or by default all that the config enables."""
    return [s for s in AIFT_STAGES if (s.name in names if names is not None else s.enabled(config))]


def aift_done(config: Config, out_dir: Path) -> bool:
    """An iteration's AIFT data is complete when every enabled stage wrote its stats."""
    return all((out_dir / f"{stage.files}.stats.json").exists() for stage in enabled_stages(config))
