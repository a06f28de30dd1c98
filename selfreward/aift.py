"""AIFT(M): prompts -> candidates -> judgments -> pairs for one model, in one directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from selfreward.config import Config, build_config, config_differences, config_to_dict, yaml_load
from selfreward.engines import Engine, make_engine
from selfreward.errors import SelfRewardError
from selfreward.models import resolve_model
from selfreward.overlap import disjoint_training_data
from selfreward.records import StageFiles, write_atomic
from selfreward.seed import load_ift, load_ranked
from selfreward.stages.candidates import generate_candidates
from selfreward.stages.common import derive_seed
from selfreward.stages.judge import judge_candidates
from selfreward.stages.pairs import make_pairs
from selfreward.stages.prompts import generate_prompts


def bind_config(directory: Path, config: Config, force: bool = False) -> None:
    """Record the config a directory is made with; refuse to continue it with another one."""
    path = directory / "config.yaml"
    new = config_to_dict(config)
    if path.exists() and not force:
        old = config_to_dict(build_config(yaml_load(path.read_text(encoding="utf-8")) or {}))
        changed = config_differences(old, new)
        if changed:
            raise SelfRewardError(f"{directory} was made with another config (differs in: {', '.join(changed)}); use --force to continue anyway")
    write_atomic(path, yaml.safe_dump(new, sort_keys=False))


class EngineCache:
    """Loads each model once and only when a stage needs it."""

    def __init__(self, config: Config):
        self.config = config
        self.engines: dict[str, Engine] = {}

    def get(self, name_or_path: str) -> Engine:
        if name_or_path not in self.engines:
            for engine in self.engines.values():
                engine.close()
            self.engines = {name_or_path: make_engine(self.config, name_or_path)}
        return self.engines[name_or_path]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.engines = {}


AIFT_STAGES = ("prompts", "candidates", "judge", "pairs")


def run_aift(
    config: Config,
    out_dir: Path,
    model: str | None = None,
    tag: str = "aift",
    force: bool = False,
    console: Console | None = None,
    stages: tuple[str, ...] = AIFT_STAGES,
    iteration: int = 1,
) -> dict[str, dict[str, Any]]:
    """Create (or resume) AIFT data of `model` (default: config.model) in `out_dir`: the given
    stages in order, each skipped when its artifacts are complete; returns stats per stage.
    `iteration` (1-based) picks the iteration's `pairs.rho`."""
    console = console or Console()
    seed_prompts: list[str] = []
    evaluation_prompts: list[str] = []
    if "prompts" in stages:
        seed_examples, reports = load_ift(config.data.ift, config.data.lang)
        data = disjoint_training_data(config, seed_examples, load_ranked(config.data.ranked, config.data.lang)[0])
        for line in [f"seed data: {report.summary()}" for report in reports] + data.report():
            console.print(line, markup=False)
        seed_prompts, evaluation_prompts = [e.prompt for e in data.ift], data.evaluation_prompts
    own_generator = config.prompts.generator if "prompts" in stages else None
    uses_model = bool({"candidates", "judge"} & set(stages)) or ("prompts" in stages and not own_generator)
    model_path = resolve_model(model or config.model.name_or_path) if uses_model else ""
    generator = resolve_model(own_generator) if own_generator else model_path
    out_dir.mkdir(parents=True, exist_ok=True)
    bind_config(out_dir, config, force)
    engines = EngineCache(config)
    batch = config.engine.batch_size

    def seed(stage: str) -> int:
        return derive_seed(config.seed, f"{tag}-{stage}")

    def done(files_name: str) -> dict[str, Any] | None:
        files = StageFiles(out_dir, files_name)
        return files.read_stats() if files.done() else None

    run = {
        "prompts": lambda: done("prompts") or generate_prompts(config.prompts, engines.get(generator), seed_prompts, evaluation_prompts, out_dir, seed("prompts"), batch),
        "candidates": lambda: done("candidates") or generate_candidates(config.candidates, engines.get(model_path), out_dir, seed("candidates"), batch),
        "judge": lambda: done("judgments") or judge_candidates(config.judge, engines.get(model_path), out_dir, seed("judge"), batch),
        "pairs": lambda: make_pairs(config.pairs, out_dir, iteration),
    }
    stats: dict[str, dict[str, Any]] = {}
    try:
        for stage in stages:
            stats[stage] = run[stage]()
    finally:
        engines.close()
    return stats
