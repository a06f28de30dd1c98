"""AIFT(M_t): one iteration's data for one model, as steps (`selfreward aift`, the stage commands,
and each iteration of `selfreward run`).

The steps, in the order they run (AIFT_STEPS; a new step is its module and one line here):
prompts -> candidates -> judge -> [consistency] -> [anchor] -> pairs -> [meta]; those in brackets
run when the config enables them (`dpo.label_smoothing: cream`, `pairs.policy: anchored`,
`meta.enabled`), and judge not with `pairs.policy: spin`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from selfreward.config import Config
from selfreward.models import resolve_model
from selfreward.overlap import disjoint_training_data
from selfreward.records import read_json
from selfreward.seed_data import IFTExample, load_ift, load_ranked
from selfreward.stages.anchor import Anchor
from selfreward.stages.candidates import Candidates
from selfreward.stages.consistency import Consistency
from selfreward.stages.judge import Judge
from selfreward.stages.meta_judge import MetaJudge
from selfreward.stages.pairs import Pairs
from selfreward.stages.prompts import Prompts
from selfreward.steps import AIFTStep, Iteration, Lineage, Step

AIFT_STEPS: tuple[type[AIFTStep], ...] = (Prompts, Candidates, Judge, Consistency, Anchor, Pairs, MetaJudge)
"""The AIFT steps in the order they run."""


def enabled_steps(config: Config, names: tuple[str, ...] | None = None) -> list[type[AIFTStep]]:
    """The step classes to run, in order: those named, or by default all that the config enables."""
    return [s for s in AIFT_STEPS if (s.stage in names if names is not None else s.enabled(config))]


def aift_done(config: Config, out_dir: Path) -> bool:
    """An iteration's AIFT data is complete when every enabled step wrote its stats."""
    return all((out_dir / f"{step.files}.stats.json").exists() for step in enabled_steps(config))


def seed_data(config: Config, console: Console) -> tuple[list[IFTExample], list[str]]:
    """The seed IFT examples (disjoint from the EFT and evaluation data) and the evaluation prompts to keep out."""
    examples, reports = load_ift(config.data.ift, config.data.lang)
    data = disjoint_training_data(config, examples, load_ranked(config.data.ranked, config.data.lang)[0])
    for line in [f"seed data: {report.summary()}" for report in reports] + data.report():
        console.print(line, markup=False)
    return data.ift, data.evaluation_prompts


def iteration(
    config: Config,
    out_dir: Path,
    steps: list[type[AIFTStep]],
    console: Console,
    model: str | None = None,
    tag: str = "aift",
    number: int = 1,
    lineage: Lineage | None = None,
) -> Iteration:
    """What `steps` are built from, loading only what they need (seed data, model paths)."""
    seeds, evaluation = seed_data(config, console) if any(s.uses_seed_data for s in steps) else ([], [])
    uses_model = any(s.uses_model(config) for s in steps)
    model_path = resolve_model(model or config.model.name_or_path) if uses_model else ""
    own_generator = config.prompts.generator if any(s.uses_seed_data for s in steps) else None
    generator = resolve_model(own_generator) if own_generator else model_path
    return Iteration(config, out_dir, tag, number, model_path, generator, lineage or Lineage(), seeds, evaluation)


def aift(it: Iteration, steps: list[type[AIFTStep]]) -> Iterator[Step]:
    """The AIFT steps of one iteration."""
    for step in steps:
        yield step.build(it)


def run_aift(
    config: Config,
    out_dir: Path,
    model: str | None = None,
    tag: str = "aift",
    force: bool = False,
    console: Console | None = None,
    stages: tuple[str, ...] | None = None,
    number: int = 1,
    lineage: Lineage | None = None,
) -> dict[str, dict[str, Any]]:
    """Create (or resume) AIFT data of `model` (default: config.model) in `out_dir`: the named steps
    (default: all the config enables), each skipped when its stats exist; returns stats per step.
    `out_dir` is bound to `config` (another config is refused unless `force`)."""
    from selfreward.rundir import Run, bind_config

    console = console or Console()
    steps = enabled_steps(config, stages)
    it = iteration(config, out_dir, steps, console, model, tag, number, lineage)
    out_dir.mkdir(parents=True, exist_ok=True)
    bind_config(out_dir, config, force)
    runner = Run(out_dir, config, console, manifest=False)
    try:
        for step in aift(it, steps):
            runner.run(step)
    finally:
        runner.tools.engines.close()
    return {s.stage: read_json(out_dir / f"{s.files}.stats.json") for s in steps}
