"""`selfreward run`: Self-Rewarding Language Models (Yuan et al., 2024), as the steps it runs.

    M0 = the seed model                     SFT baseline = SFT(M0, IFT)   (the paper's comparison; EFT's default writer)
    EFT = judgments of human-ranked answers that agree with the human ranking (the judge task)
    M1 = SFT(M0, IFT + EFT)                 [IFT answered by M0 itself: sft.m1_self_distill; EFT only: sft.m1_with_ift false]
    for t = 1 .. loop.iterations:
        AIFT(M_t) = M_t writes prompts -> N answers each -> K judgments each -> best-vs-worst pairs
        M_{t+1} = DPO(M_t, AIFT(M_t))  [-> checkpoint selection]  -> validation on held-out pairs

Each step is skipped when its outputs exist (`selfreward run --resume`); inside a step, generation
resumes from its last finished batch and training from its last Trainer checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from selfreward.batches import derive_seed
from selfreward.config import Config, DPOTrainingConfig, SFTTrainingConfig
from selfreward.errors import SelfRewardError
from selfreward.models import resolve_model
from selfreward.overlap import TrainingData, disjoint_training_data
from selfreward.recipes.aift import aift, enabled_steps, iteration
from selfreward.records import read_json, read_jsonl, write_json
from selfreward.rundir import Run, bind_config
from selfreward.seed_data import RankedGroup, load_ift, load_ranked
from selfreward.stages.dpo import TrainDPO, dpo_reference
from selfreward.stages.dpo_validation import ValidateDPO
from selfreward.stages.eft import BuildEFT
from selfreward.stages.select import SelectCheckpoint
from selfreward.stages.self_distill import SelfDistill, distilled_examples
from selfreward.stages.sft import TrainSFT
from selfreward.steps import Lineage, Note, Step, Tools
from selfreward.training import child_process


def self_rewarding(config: Config, run: Run, data: TrainingData, ranked: list[RankedGroup]) -> Iterator[Step]:
    """The steps of one run, in order; each reads what the steps before it wrote."""
    m0 = resolve_model(config.model.name_or_path)
    ift = [(e.prompt, e.response) for e in data.ift]
    if config.sft.baseline or config.eft.judge == "baseline":
        yield sft(config, config.sft, run, "sft_baseline", m0, ift, run.model("sft_baseline"))
    yield eft(config, run, data, ranked, m0)
    eft_examples = [(e["prompt"], e["completion"]) for e in read_jsonl(run.dir / "eft" / "train.jsonl")]
    if not eft_examples and not config.sft.m1_with_ift:
        raise SelfRewardError(
            "[eft] no judgment agreed with the human ranking, and sft.m1_with_ift is false: M1 has no example to learn "
            "from (to train it on IFT: --resume RUN --set sft.m1_with_ift=true --force)"
        )
    if not eft_examples:
        yield Note(
            "eft/warning",
            "warning",
            "[eft] warning: no judgment agreed with the human ranking; M1 is trained on IFT data only",
        )
    yield from m1_sft(config, run, data, m0, eft_examples)
    yield from evaluation(config, run, "M1")
    model = run.model("M1")
    for t in range(1, config.loop.iterations + 1):
        steps = enabled_steps(config)
        yield from aift(
            iteration(config, run.dir / f"iter{t}", steps, run.console, str(model), f"iter{t}", t, lineage(run, t)),
            steps,
        )
        target = run.model(f"M{t + 1}")
        if read_json(run.dir / f"iter{t}" / "pairs.stats.json")["pairs"] == 0 and not (target / "config.json").exists():
            yield no_pairs(config, run, t)
            if config.loop.on_no_pairs == "stop":
                return
            continue
        yield from dpo(config, run, t, model, target)
        yield from evaluation(config, run, f"M{t + 1}")
        model = target


def start(
    config: Config, run_dir: Path, console: Console, force: bool = False
) -> tuple[Run, TrainingData, list[RankedGroup]]:
    """Bind `run_dir` to `config` (refusing another config unless `force`), load the seed data, keep
    training data apart from evaluation data (RUN/data.stats.json) and open the run's manifest."""
    ift, ift_reports = load_ift(config.data.ift, config.data.lang)
    ranked, ranked_reports = load_ranked(config.data.ranked, config.data.lang)
    data = disjoint_training_data(config, ift, ranked)
    resolve_model(config.model.name_or_path)  # fails early on a missing seed model
    refuse_late_steps(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    bind_config(run_dir, config, force)
    run = Run(run_dir, config, console)
    for line in [f"seed data: {report.summary()}" for report in ift_reports + ranked_reports] + data.report():
        run.log(line)
    write_json(run_dir / "data.stats.json", data.stats)
    return run, data, ranked


def refuse_late_steps(config: Config, run_dir: Path) -> None:
    """Refuse AIFT steps enabled for an iteration whose DPO is done: the meta-judge would add judge
    pairs to a pairs.jsonl that M_{t+1} was trained without (and other steps would describe data
    that DPO never saw)."""
    for t in range(1, config.loop.iterations + 1):
        iter_dir = run_dir / f"iter{t}"
        if (run_dir / f"dpo{t}" / "dpo.stats.json").exists():
            late = [s.stage for s in enabled_steps(config) if not (iter_dir / f"{s.files}.stats.json").exists()]
            if late:
                raise SelfRewardError(
                    f"step {', '.join(late)} is enabled but did not run in {iter_dir}, whose DPO is done: it would "
                    f"change the data after M{t + 1} was trained on it; turn it off for this run (with --force) or start a new run"
                )


def sft(
    config: Config,
    settings: SFTTrainingConfig,
    run: Run,
    name: str,
    base: str,
    examples: list[tuple[str, str]],
    target: Path,
) -> TrainSFT:
    return TrainSFT(
        name,
        config.model,
        settings,
        base,
        examples,
        run.dir / name,
        target,
        derive_seed(config.seed, name),
        child_process(settings, config.engine.kind),
    )


def m1_sft(
    config: Config, run: Run, data: TrainingData, m0: str, eft_examples: list[tuple[str, str]]
) -> Iterator[Step]:
    """M1 = SFT(M0, IFT + EFT) for `sft.m1_epochs`, the IFT examples answered by M0 itself with
    `sft.m1_self_distill`, or EFT only."""
    if config.sft.m1_self_distill:
        yield self_distill(config, data, m0, run.dir / "self_distill")
    ift = m1_ift_examples(config, data, run.dir / "self_distill")
    if config.sft.m1_self_distill and not ift:
        yield Note(
            "self_distill/warning",
            "warning",
            f"[self_distill] warning: M0 finished none of its answers within sft.self_distill_max_new_tokens="
            f"{config.sft.self_distill_max_new_tokens}; M1 is trained on the EFT examples only",
        )
    yield sft(config, config.sft.for_m1(), run, "sft", m0, ift + eft_examples, run.model("M1"))


def m1_ift_examples(config: Config, data: TrainingData, distill_dir: Path) -> list[tuple[str, str]]:
    """M1's IFT examples: the data's, M0's own answers (`sft.m1_self_distill`, from a finished
    self_distill step in `distill_dir`), or none (`sft.m1_with_ift` false)."""
    if not config.sft.m1_with_ift:
        return []
    if config.sft.m1_self_distill:
        return distilled_examples(distill_dir)
    return [(e.prompt, e.response) for e in data.ift]


def self_distill(config: Config, data: TrainingData, m0: str, out_dir: Path) -> SelfDistill:
    """M0 answers the IFT prompts (`sft.m1_self_distill`) in `out_dir`."""
    return SelfDistill(
        "self_distill",
        m0,
        [e.prompt for e in data.ift],
        out_dir,
        config.sft.self_distill_max_new_tokens,
        derive_seed(config.seed, "self_distill"),
        config.engine.batch_size,
    )


def eft(config: Config, run: Run, data: TrainingData, ranked: list[RankedGroup], m0: str) -> BuildEFT:
    """EFT data written by the SFT baseline (`eft.judge: baseline`, the paper), M0 (`seed`) or a model."""
    writer = {"baseline": str(run.model("sft_baseline")), "m0": m0}.get(config.eft.judge) or resolve_model(
        config.eft.judge
    )
    return BuildEFT(
        "eft",
        config.eft,
        config.judge,
        writer,
        ranked,
        data.eft_excluded,
        run.dir / "eft",
        derive_seed(config.seed, "eft"),
        config.engine.batch_size,
    )


def dpo(config: Config, run: Run, t: int, current: Path, target: Path) -> Iterator[Step]:
    """M_{t+1} = DPO from M_t on AIFT(M_t) [, the best checkpoint by selection], then its validation."""
    stage = run.dir / f"dpo{t}"
    trained = stage / "final" if config.select.enabled else target  # with select, a candidate for M_{t+1}
    reference = dpo_reference(config.dpo.reference, run.model)
    settings = iteration_dpo_config(config, run.dir / f"iter{t}")
    yield TrainDPO(
        f"dpo{t}",
        config.model,
        settings,
        str(current),
        reference,
        run.dir / f"iter{t}" / "pairs.jsonl",
        stage,
        trained,
        derive_seed(config.seed, f"dpo{t}"),
        child_process(config.dpo, config.engine.kind),
    )
    if config.select.enabled:
        yield SelectCheckpoint(f"select{t}", config, run.dir, t, current, target)
    yield ValidateDPO(
        f"validate{t}",
        config.model,
        settings,
        str(current),
        str(target),
        reference,
        stage,
        derive_seed(config.seed, f"validate{t}"),
    )


def no_pairs(config: Config, run: Run, t: int) -> Note:
    """What an iteration without pairs does (`loop.on_no_pairs`): stop the loop, or skip its DPO (M_{t+1} = M_t)."""
    stats = run.dir / f"iter{t}" / "pairs.stats.json"
    if config.loop.on_no_pairs == "stop":
        return Note(
            f"dpo{t}",
            "stopped: no pairs",
            f"[dpo{t}] iteration {t} produced 0 pairs (see {stats}); stopping: M{t} is the last model (loop.on_no_pairs=skip continues instead)",
        )
    return Note(f"dpo{t}", "skipped: no pairs", f"[dpo{t}] iteration {t} produced 0 pairs; skipped: M{t + 1} = M{t}")


def iteration_dpo_config(config: Config, iter_dir: Path) -> DPOTrainingConfig:
    """`dpo` as this iteration trains: with `label_smoothing: cream`, the smoothing its consistency step measured."""
    if config.dpo.label_smoothing != "cream":
        return config.dpo
    return config.dpo.model_copy(
        update={"label_smoothing": float(read_json(iter_dir / "consistency.stats.json")["label_smoothing"])}
    )


def trained_from(run: Run, t: int) -> str:
    """The model M_t was trained from: M0 for M1 (its SFT), else the reference of the DPO that made M_t; none for M0."""
    if t == 0:
        return ""
    if t == 1:
        return resolve_model(run.config.model.name_or_path)
    return dpo_reference(run.config.dpo.reference, run.model) or str(run.model(f"M{t - 1}"))


def lineage(run: Run, t: int) -> Lineage:
    previous = str(run.model(f"M{t - 1}")) if t > 1 else resolve_model(run.config.model.name_or_path)
    return Lineage(
        initial=str(run.model("M1")),
        trained_from=trained_from(run, t),
        previous=previous,
        previous_trained_from=trained_from(run, t - 1),
    )


def evaluation(config: Config, run: Run, model: str) -> Iterator[Step]:
    """With `eval.after_iteration`, evaluate the checkpoints so far as soon as `model` is trained."""
    if config.eval.after_iteration:
        yield Evaluate(f"eval-{model}", config, run.dir, run.dir / "eval" / f"after-{model}.json")


@dataclass(frozen=True)
class Evaluate:
    """`selfreward eval` of the run's checkpoints so far (finished parts are cached) -> RUN/eval."""

    name: str
    config: Config
    run_dir: Path
    marker: Path
    """Written when done: the evaluation summary as it stood."""

    def outputs(self) -> tuple[Path, ...]:
        return (self.marker,)

    def run(self, tools: Tools) -> dict[str, Any]:
        from selfreward.eval.runner import evaluate_run

        tools.engines.close()
        summary = evaluate_run(self.run_dir, self.config, tools.console)
        write_json(self.marker, summary)
        return {}
