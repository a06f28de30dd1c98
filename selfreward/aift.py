"""AIFT(M): the stages of `selfreward.iteration` (prompts -> candidates -> judgments -> pairs, and
those the config enables: IFT prompts for spin, the anchor for anchored, the meta-judge) for one
model, in one directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from selfreward.config import Config
from selfreward.iteration import Context, EngineCache, Lineage, Stage, enabled_stages
from selfreward.models import resolve_model
from selfreward.overlap import disjoint_training_data
from selfreward.records import StageFiles
from selfreward.rundir import bind_config
from selfreward.seed import IFTExample, load_ift, load_ranked


def seed_data(config: Config, console: Console) -> tuple[list[IFTExample], list[str]]:
    """The seed IFT examples (disjoint from the EFT data) and the evaluation prompts to keep out."""
    examples, reports = load_ift(config.data.ift, config.data.lang)
    data = disjoint_training_data(config, examples, load_ranked(config.data.ranked, config.data.lang)[0])
    for line in [f"seed data: {report.summary()}" for report in reports] + data.report():
        console.print(line, markup=False)
    return data.ift, data.evaluation_prompts


def make_context(config: Config, out_dir: Path, stages: list[Stage], model: str | None, tag: str, console: Console, iteration: int = 1, lineage: Lineage | None = None) -> Context:
    """Load what the stages need (seed data, model paths) before any of them starts."""
    seeds, evaluation = seed_data(config, console) if any(s.uses_seed_data for s in stages) else ([], [])
    own_generator = config.prompts.generator if any(s.uses_seed_data for s in stages) else None
    uses_model = any(s.uses_model(config) for s in stages)
    model_path = resolve_model(model or config.model.name_or_path) if uses_model else ""
    generator = resolve_model(own_generator) if own_generator else model_path
    return Context(config, out_dir, model_path, generator, tag, EngineCache(config), seeds, evaluation, iteration, lineage or Lineage())


def run_aift(
    config: Config,
    out_dir: Path,
    model: str | None = None,
    tag: str = "aift",
    force: bool = False,
    console: Console | None = None,
    stages: tuple[str, ...] | None = None,
    iteration: int = 1,
    lineage: Lineage | None = None,
) -> dict[str, dict[str, Any]]:
    """Create (or resume) AIFT data of `model` (default: config.model) in `out_dir`: the named
    stages (default: all) that the config enables, in order, each skipped when its stats exist;
    returns stats per stage. `iteration` (1-based) picks the iteration's `pairs.rho`; `lineage`
    names the models some stages compare M_t with (the anchor's initial model, default config.model;
    the implicit judge's reference; CREAM's previous judge)."""
    selected = enabled_stages(config, stages)
    context = make_context(config, out_dir, selected, model, tag, console or Console(), iteration, lineage)
    out_dir.mkdir(parents=True, exist_ok=True)
    bind_config(out_dir, config, force)
    stats: dict[str, dict[str, Any]] = {}
    try:
        for stage in selected:
            files = StageFiles(out_dir, stage.files)
            stats[stage.name] = files.read_stats() if files.done() else stage.work(context)
    finally:
        context.engines.close()
    return stats
