"""Steps: what a recipe is made of, and what one iteration's steps are built from.

A step is a small frozen dataclass that holds everything it works on (config sections, paths,
model paths, its seed) and has
- `name`: its name in the run's manifest and log (`sft_baseline`, `iter1/judge`, `dpo1`);
- `outputs()`: the files whose existence marks it done (its stats file last);
- `run(tools) -> stats`: the work, which writes the outputs (generation steps resume from their
  last finished batch, training steps from their last Trainer checkpoint).
The runner (selfreward.rundir.Run) runs a step unless its outputs exist and records it in the
manifest; recipes (selfreward.recipes) yield steps in the order the method runs them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from rich.console import Console

from selfreward.batches import derive_seed
from selfreward.config import Config
from selfreward.engines import Engine, make_engine
from selfreward.records import read_json
from selfreward.seed_data import IFTExample


class Step(Protocol):
    @property
    def name(self) -> str: ...

    def outputs(self) -> tuple[Path, ...]: ...

    def run(self, tools: Tools) -> dict[str, Any]: ...


def done(step: Step) -> bool:
    """Whether a step's outputs all exist (a step with none always runs)."""
    outputs = step.outputs()
    return bool(outputs) and all(path.exists() for path in outputs)


@dataclass(frozen=True)
class Note:
    """A decision of a recipe (an iteration without pairs stops the loop), recorded in the manifest
    and the log; no work, no outputs."""

    name: str
    status: str
    message: str

    def outputs(self) -> tuple[Path, ...]:
        return ()

    def run(self, tools: Tools) -> dict[str, Any]:
        return {"status": self.status, "message": self.message}


def run_parts(parts: tuple[Step, ...], tools: Tools) -> list[dict[str, Any]]:
    """The stats of each part of a composite step, running the parts not done yet (a resumed step redoes nothing finished)."""
    return [part.run(tools) if not done(part) else read_json(part.outputs()[-1]) for part in parts]


class EngineCache:
    """Loads each model once, and only when a step needs it; a new model closes the one before
    (one model in memory, so a GPU is free for the next)."""

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


@dataclass
class Tools:
    """What steps share at run time but do not hold: the console, the loaded models."""

    console: Console
    engines: EngineCache


@dataclass(frozen=True)
class Lineage:
    """Where M_t comes from, for the steps that compare it with other models (empty: not known)."""

    initial: str = ""
    """The model the loop starts from (M1 in `selfreward run`): the anchor of `pairs.policy anchored`."""
    trained_from: str = ""
    """The model M_t was trained from (M0 for M1; DPO's reference for later ones): pi_ref of the implicit judge."""
    previous: str = ""
    """M_{t-1} (M0 for M1): the second judge of `dpo.label_smoothing: cream`."""
    previous_trained_from: str = ""
    """The model M_{t-1} was trained from (none for M0): its pi_ref as an implicit judge."""


@dataclass(frozen=True)
class Iteration:
    """What one iteration's AIFT steps are built from: AIFT(M_t) in `out_dir`."""

    config: Config
    out_dir: Path
    tag: str
    """Names its steps (`iter1/judge`) and keys their seeds."""
    number: int = 1
    """1-based (picks the iteration's `pairs.rho`)."""
    model: str = ""
    """M_t, resolved (empty when no step needs it)."""
    generator: str = ""
    """The model that writes new prompts: `prompts.generator`, else M_t."""
    lineage: Lineage = Lineage()
    ift_examples: list[IFTExample] = field(default_factory=list)
    """The seed IFT examples (disjoint from EFT and evaluation data): self-instruct shots, spin's prompts."""
    evaluation_prompts: list[str] = field(default_factory=list)
    """Prompts new prompts must not copy."""

    def seed(self, stage: str) -> int:
        return derive_seed(self.config.seed, f"{self.tag}-{stage}")

    def step_name(self, stage: str) -> str:
        return f"{self.tag}/{stage}"

    @property
    def batch_size(self) -> int:
        return self.config.engine.batch_size


@dataclass(frozen=True)
class Column:
    """One figure of the run summary: `stat` of a step's stats (a dotted path into nested stats),
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


class AIFTStep(ABC):
    """Base of the AIFT step classes: built from an `Iteration`; `stage` is its name on the command
    line (`selfreward judge`) and in the manifest (`iter1/judge`); `files` names its outputs in the
    iteration directory (`FILES.stats.json` marks it done); `columns` are the figures the run summary
    shows; `enabled`: whether an iteration runs it (a step named on the command line runs anyway);
    `uses_model`: whether it needs M_t; `uses_seed_data`: whether it needs the seed IFT prompts."""

    stage: ClassVar[str]
    files: ClassVar[str]
    columns: ClassVar[tuple[Column, ...]] = ()
    uses_seed_data: ClassVar[bool] = False

    @staticmethod
    def enabled(config: Config) -> bool:
        return True

    @staticmethod
    def uses_model(config: Config) -> bool:
        return True

    @classmethod
    @abstractmethod
    def build(cls, it: Iteration) -> Step: ...


def run_step(step: Step, config: Config | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run one step on its own, outside a recipe (no done check), with models of its own, closed after."""
    tools = Tools(console or Console(), EngineCache(config or Config()))
    try:
        return step.run(tools)
    finally:
        tools.engines.close()
