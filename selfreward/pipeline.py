"""`selfreward run`: M0 -> SFT baseline -> EFT -> M1 -> (AIFT(M_t) -> DPO [-> select] -> M_{t+1}) x iterations.

Every stage writes plain artifacts into the run directory and is skipped when they are complete,
so `--resume` continues from the last finished stage (and inside generation stages from the
last finished batch). The manifest (selfreward.rundir) records the config, versions, git commit,
seed and the start and end of every stage; the AIFT stages are declared in selfreward.iteration.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from selfreward.aift import run_aift
from selfreward.config import Config, DPOConfig
from selfreward.engines import make_engine, make_judge_engine
from selfreward.errors import SelfRewardError
from selfreward.iteration import Lineage, aift_done, enabled_stages
from selfreward.models import resolve_model
from selfreward.overlap import TrainingData, disjoint_training_data
from selfreward.records import read_json, read_jsonl, write_json
from selfreward.rundir import Run, bind_config
from selfreward.seed import RankedGroup, load_ift, load_ranked
from selfreward.stages.common import derive_seed
from selfreward.stages.dpo import VALIDATION_PAIRS, dpo_reference, train_dpo
from selfreward.stages.dpo_validation import validate_dpo
from selfreward.stages.eft import build_eft
from selfreward.stages.select import manifest_entry, select_checkpoint
from selfreward.stages.sft import train_sft
from selfreward.summary import write_summary


def run_pipeline(config: Config, run_dir: Path, console: Console, force: bool = False) -> dict[str, Any]:
    """Run or resume the whole loop in `run_dir`; returns the summary."""
    ift, ift_reports = load_ift(config.data.ift, config.data.lang)
    ranked, ranked_reports = load_ranked(config.data.ranked, config.data.lang)
    data = disjoint_training_data(config, ift, ranked)
    seed_model = resolve_model(config.model.name_or_path)
    refuse_late_stages(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    bind_config(run_dir, config, force)
    run = Run(run_dir, config, console)
    for report in ift_reports + ranked_reports:
        run.log(f"seed data: {report.summary()}")
    for line in data.report():
        run.log(line)
    write_json(run_dir / "data.stats.json", data.stats)
    train_m1(run, seed_model, data, ranked)
    evaluate_if_configured(run, config)
    current = run.model("M1")
    for t in range(1, config.loop.iterations + 1):
        trained = iterate(run, t, current)
        if trained is None:
            break
        current = trained
    summary = write_summary(run_dir)
    run.finish()
    return summary


def refuse_late_stages(config: Config, run_dir: Path) -> None:
    """Refuse AIFT stages enabled for an iteration whose DPO is done: the meta-judge would add judge
    pairs to a pairs.jsonl that M_{t+1} was trained without (and other stages would describe data
    that DPO never saw)."""
    for t in range(1, config.loop.iterations + 1):
        iter_dir = run_dir / f"iter{t}"
        if (run_dir / f"dpo{t}" / "dpo.stats.json").exists():
            late = [s.name for s in enabled_stages(config) if not (iter_dir / f"{s.files}.stats.json").exists()]
            if late:
                raise SelfRewardError(
                    f"stage {', '.join(late)} is enabled but did not run in {iter_dir}, whose DPO is done: it would "
                    f"change the data after M{t + 1} was trained on it; turn it off for this run (with --force) "
                    "or start a new run"
                )


def train_m1(run: Run, seed_model: str, data: TrainingData, ranked: list[RankedGroup]) -> None:
    """The SFT baseline (when needed), the EFT data and M1 = SFT on IFT + EFT."""
    config, seed = run.config, run.config.seed
    ift_examples = [(e.prompt, e.response) for e in data.ift]
    if config.sft.baseline or config.eft.judge == "baseline":
        run.stage("sft_baseline", run.trained("sft_baseline", run.dir / "sft_baseline" / "sft.stats.json"), lambda: train_sft(
            config.model, config.sft, seed_model, ift_examples, run.dir / "sft_baseline", run.model("sft_baseline"), derive_seed(seed, "sft_baseline")))
    eft_dir = run.dir / "eft"
    run.stage("eft", (eft_dir / "eft.stats.json").exists(), partial(eft_stage, run, seed_model, data, ranked))
    if read_json(eft_dir / "eft.stats.json")["examples"] == 0:
        run.log("[eft] warning: no judgment agreed with the human ranking; M1 is trained on IFT data only")

    def sft_stage() -> dict[str, Any]:
        eft_examples = [(e["prompt"], e["completion"]) for e in read_jsonl(eft_dir / "train.jsonl")]
        return train_sft(config.model, config.sft, seed_model, ift_examples + eft_examples, run.dir / "sft", run.model("M1"), derive_seed(seed, "sft"))

    run.stage("sft", run.trained("M1", run.dir / "sft" / "sft.stats.json"), sft_stage)


def eft_stage(run: Run, seed_model: str, data: TrainingData, ranked: list[RankedGroup]) -> dict[str, Any]:
    config = run.config
    if config.eft.strategy == "teacher" and config.eft.teacher is not None:
        engine = make_judge_engine(config, config.eft.teacher, seed_model)
    else:
        judge_model = {"baseline": str(run.model("sft_baseline")), "seed": seed_model}.get(config.eft.judge) or resolve_model(config.eft.judge)
        engine = make_engine(config, judge_model)
    try:
        return build_eft(config.eft, config.judge, engine, ranked, data.eft_excluded, run.dir / "eft", derive_seed(config.seed, "eft"), config.engine.batch_size)
    finally:
        engine.close()


def trained_from(run: Run, t: int) -> str:
    """The model M_t was trained from: M0 for M1 (its SFT), else the reference of the DPO that made M_t; none for M0."""
    if t == 0:
        return ""
    if t == 1:
        return resolve_model(run.config.model.name_or_path)
    return dpo_reference(run.config.dpo.reference, run.model) or str(run.model(f"M{t - 1}"))


def lineage(run: Run, t: int) -> Lineage:
    previous = str(run.model(f"M{t - 1}")) if t > 1 else resolve_model(run.config.model.name_or_path)
    return Lineage(initial=str(run.model("M1")), trained_from=trained_from(run, t), previous=previous, previous_trained_from=trained_from(run, t - 1))


def iterate(run: Run, t: int, current: Path) -> Path | None:
    """AIFT(M_t) -> DPO -> M_{t+1}; returns the model the next iteration starts from (None: stop)."""
    config, iter_dir = run.config, run.dir / f"iter{t}"
    run.stage(f"aift{t}", aift_done(config, iter_dir), partial(
        run_aift, config, iter_dir, model=str(current), tag=f"iter{t}", force=True, console=run.console, iteration=t, lineage=lineage(run, t)))
    pairs = read_json(iter_dir / "pairs.stats.json")["pairs"]
    target = run.model(f"M{t + 1}")
    dpo_stats = run.dir / f"dpo{t}" / "dpo.stats.json"
    if pairs == 0 and not run.trained(f"M{t + 1}", dpo_stats):
        if config.loop.on_no_pairs == "stop":
            run.mark(f"dpo{t}", "stopped: no pairs")
            run.log(f"[dpo{t}] iteration {t} produced 0 pairs (see {iter_dir / 'pairs.stats.json'}); stopping: M{t} is the last model (loop.on_no_pairs=skip continues instead)")
            return None
        run.mark(f"dpo{t}", "skipped: no pairs")
        run.log(f"[dpo{t}] iteration {t} produced 0 pairs; skipped: M{t + 1} = M{t}")
        return current
    trained = run.dir / f"dpo{t}" / "final" if config.select.enabled else target  # with select, a candidate for M_{t+1}
    run.stage(f"dpo{t}", (trained / "config.json").exists() and dpo_stats.exists(), partial(
        train_dpo, config.model, iteration_dpo_config(config, iter_dir), str(current), dpo_reference(config.dpo.reference, run.model), iter_dir / "pairs.jsonl", run.dir / f"dpo{t}", trained, derive_seed(config.seed, f"dpo{t}")))
    if config.select.enabled:
        select_stats = run.dir / f"dpo{t}" / "select.stats.json"
        run.stage(f"select{t}", run.trained(f"M{t + 1}", select_stats), partial(select_checkpoint, config, run.dir, t, current, target))
        run.manifest["stages"][f"select{t}"].update(manifest_entry(read_json(select_stats)))
        run.save()
    run.stage(f"validate{t}", (run.dir / f"dpo{t}" / "validation.stats.json").exists(), partial(
        validate_dpo, config.model, config.dpo, str(current), str(target), dpo_reference(config.dpo.reference, run.model), run.dir / f"dpo{t}" / VALIDATION_PAIRS, run.dir / f"dpo{t}", derive_seed(config.seed, f"validate{t}")))
    evaluate_if_configured(run, config)
    return target


def iteration_dpo_config(config: Config, iter_dir: Path) -> DPOConfig:
    """`dpo` as this iteration trains: with `label_smoothing: cream`, the smoothing its consistency stage measured."""
    if config.dpo.label_smoothing != "cream":
        return config.dpo
    return config.dpo.model_copy(update={"label_smoothing": float(read_json(iter_dir / "consistency.stats.json")["label_smoothing"])})


def evaluate_if_configured(run: Run, config: Config) -> None:
    """With `eval.after_iteration`, evaluate the checkpoints so far (finished parts are cached)."""
    if config.eval.after_iteration:
        from selfreward.eval.runner import evaluate_run

        run.log("[eval] evaluating the checkpoints so far")
        evaluate_run(run.dir, config, run.console)
