"""`selfreward run`: M0 -> SFT baseline -> EFT -> M1 -> (AIFT(M_t) -> DPO -> M_{t+1}) x iterations.

Every stage writes plain artifacts into the run directory and is skipped when they are complete,
so `--resume` continues from the last finished stage (and inside generation stages from the
last finished batch). The manifest records the config, versions, git commit, seed and the start
and end of every stage.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from selfreward import __version__
from selfreward.aift import bind_config, run_aift
from selfreward.config import Config, build_config, config_to_dict, yaml_load
from selfreward.engines import make_engine, make_judge_engine
from selfreward.errors import SelfRewardError
from selfreward.models import resolve_model
from selfreward.overlap import disjoint_training_data
from selfreward.records import read_json, read_jsonl, write_json
from selfreward.seed import load_ift, load_ranked
from selfreward.stages.common import derive_seed
from selfreward.stages.dpo import dpo_reference, train_dpo
from selfreward.stages.eft import build_eft
from selfreward.stages.sft import train_sft

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "selfreward")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


class Run:
    """A run directory: its manifest, log and model paths."""

    def __init__(self, directory: Path, config: Config, console: Console):
        self.dir = directory
        self.config = config
        self.console = console
        self.manifest_path = directory / "manifest.json"
        self.manifest: dict[str, Any] = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {
            "selfreward": __version__,
            "created": now(),
            "seed": config.seed,
            "stages": {},
        }
        self.manifest.update({"config": config_to_dict(config), "versions": versions(), "git_commit": git_commit()})
        self.manifest.setdefault("attempts", []).append({"started": now(), "argv": sys.argv})
        self.save()

    def save(self) -> None:
        write_json(self.manifest_path, self.manifest)

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)
        with open(self.dir / "run.log", "a", encoding="utf-8") as handle:
            handle.write(f"{now()} {message}\n")

    def model(self, name: str) -> Path:
        return self.dir / "models" / name

    def stage(self, name: str, done: bool, work: Any) -> Any:
        """Run `work()` unless the stage's artifacts are complete; record times in the manifest."""
        record = self.manifest["stages"].setdefault(name, {})
        if done:
            if record.get("status") != "done":
                record["status"] = "done"
                self.save()
            self.log(f"[{name}] already complete, skipped")
            return None
        record.update({"status": "running", "started": now()})
        self.save()
        self.log(f"[{name}] started")
        started = time.perf_counter()
        result = work()
        record.update({"status": "done", "ended": now(), "seconds": round(time.perf_counter() - started, 1)})
        self.save()
        self.log(f"[{name}] done in {record['seconds']} s")
        return result

    def mark(self, name: str, status: str) -> None:
        self.manifest["stages"].setdefault(name, {})["status"] = status
        self.save()


def open_run(directory: Path, config: Config | None, overrides_given: bool, force: bool) -> Config:
    """The config of an existing run; a differing new config is refused unless forced."""
    if not (directory / "manifest.json").exists() or not (directory / "config.yaml").exists():
        raise SelfRewardError(f"{directory} is not a selfreward run (no manifest.json/config.yaml); start one with `selfreward run`")
    saved = build_config(yaml_load((directory / "config.yaml").read_text(encoding="utf-8")) or {})
    if config is None or not overrides_given:
        return saved
    bind_config(directory, config, force)
    return config


def run_pipeline(config: Config, run_dir: Path, console: Console, force: bool = False) -> dict[str, Any]:
    """Run or resume the whole loop in `run_dir`; returns the summary."""
    ift, ift_reports = load_ift(config.data.ift, config.data.lang)
    ranked, ranked_reports = load_ranked(config.data.ranked, config.data.lang)
    data = disjoint_training_data(config, ift, ranked)
    seed_model = resolve_model(config.model.name_or_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    bind_config(run_dir, config, force)
    run = Run(run_dir, config, console)
    for report in ift_reports + ranked_reports:
        run.log(f"seed data: {report.summary()}")
    for line in data.report():
        run.log(line)
    write_json(run_dir / "data.stats.json", data.stats)
    seed = config.seed
    ift_examples = [(e.prompt, e.response) for e in data.ift]

    def trained(name: str, stats: Path) -> bool:
        """A training stage is done when its model and its stats (written after the model) exist."""
        return (run.model(name) / "config.json").exists() and stats.exists()

    baseline_needed = config.sft.baseline or config.eft.judge == "baseline"
    if baseline_needed:
        run.stage("sft_baseline", trained("sft_baseline", run_dir / "sft_baseline" / "sft.stats.json"), lambda: train_sft(
            config.model, config.sft, seed_model, ift_examples, run_dir / "sft_baseline", run.model("sft_baseline"), derive_seed(seed, "sft_baseline")))

    eft_dir = run_dir / "eft"
    judge_model = {"baseline": str(run.model("sft_baseline")), "seed": seed_model}.get(config.eft.judge) or resolve_model(config.eft.judge)

    def eft_stage() -> dict[str, Any]:
        if config.eft.strategy == "teacher" and config.eft.teacher is not None:
            engine = make_judge_engine(config, config.eft.teacher, seed_model)
        else:
            engine = make_engine(config, judge_model)
        try:
            return build_eft(config.eft, config.judge, engine, ranked, data.eft_excluded, eft_dir, derive_seed(seed, "eft"), config.engine.batch_size)
        finally:
            engine.close()

    run.stage("eft", (eft_dir / "eft.stats.json").exists(), eft_stage)
    eft_stats = json.loads((eft_dir / "eft.stats.json").read_text())
    if eft_stats["examples"] == 0:
        run.log("[eft] warning: no judgment agreed with the human ranking; M1 is trained on IFT data only")

    def sft_stage() -> dict[str, Any]:
        eft_examples = [(e["prompt"], e["completion"]) for e in read_jsonl(eft_dir / "train.jsonl")]
        return train_sft(config.model, config.sft, seed_model, ift_examples + eft_examples, run_dir / "sft", run.model("M1"), derive_seed(seed, "sft"))

    run.stage("sft", trained("M1", run_dir / "sft" / "sft.stats.json"), sft_stage)
    evaluate_if_configured(run, config)

    current = run.model("M1")
    for t in range(1, config.loop.iterations + 1):
        iter_dir = run_dir / f"iter{t}"
        run.stage(f"aift{t}", (iter_dir / "pairs.stats.json").exists(), partial(
            run_aift, config, iter_dir, model=str(current), tag=f"iter{t}", force=True, console=console, iteration=t))
        pairs = json.loads((iter_dir / "pairs.stats.json").read_text())["pairs"]
        target = run.model(f"M{t + 1}")
        dpo_stats = run_dir / f"dpo{t}" / "dpo.stats.json"
        if pairs == 0 and not trained(f"M{t + 1}", dpo_stats):
            if config.loop.on_no_pairs == "stop":
                run.mark(f"dpo{t}", "stopped: no pairs")
                run.log(f"[dpo{t}] iteration {t} produced 0 pairs (see {iter_dir / 'pairs.stats.json'}); stopping: M{t} is the last model (loop.on_no_pairs=skip continues instead)")
                break
            run.mark(f"dpo{t}", "skipped: no pairs")
            run.log(f"[dpo{t}] iteration {t} produced 0 pairs; skipped: M{t + 1} = M{t}")
            continue
        reference = dpo_reference(config.dpo.reference, run.model)
        run.stage(f"dpo{t}", trained(f"M{t + 1}", dpo_stats), partial(
            train_dpo, config.model, config.dpo, str(current), reference, iter_dir / "pairs.jsonl", run_dir / f"dpo{t}", target, derive_seed(seed, f"dpo{t}")))
        current = target
        evaluate_if_configured(run, config)

    summary = summarize(run_dir)
    write_json(run_dir / "summary.json", summary)
    run.manifest["finished"] = now()
    run.save()
    return summary


def evaluate_if_configured(run: Run, config: Config) -> None:
    """With `eval.after_iteration`, evaluate the checkpoints so far (finished parts are cached)."""
    if config.eval.after_iteration:
        from selfreward.eval.runner import evaluate_run

        run.log("[eval] evaluating the checkpoints so far")
        evaluate_run(run.dir, config, run.console)


def summarize(run_dir: Path) -> dict[str, Any]:
    """Per-stage and per-iteration figures gathered from the run's stats files and manifest."""
    manifest = read_json(run_dir / "manifest.json")
    seconds = {name: s.get("seconds") for name, s in manifest.get("stages", {}).items()}
    statuses = {name: s.get("status") for name, s in manifest.get("stages", {}).items()}
    iterations = []
    t = 1
    while (run_dir / f"iter{t}").exists():
        d = run_dir / f"iter{t}"
        prompts, cands, judg, pairs = (read_json(d / f"{n}.stats.json") for n in ("prompts", "candidates", "judgments", "pairs"))
        dpo = read_json(run_dir / f"dpo{t}" / "dpo.stats.json")
        iterations.append({
            "iteration": t,
            "model": f"M{t}",
            "prompts_kept": prompts.get("prompts_kept"),
            "candidates": cands.get("candidates"),
            "judge_parse_rate": judg.get("parse_rate_text"),
            "judge_valid_rate": judg.get("valid_rate"),
            "pairs": pairs.get("pairs"),
            "pair_yield": pairs.get("pair_yield"),
            "mean_margin": pairs.get("mean_margin"),
            "dpo_loss": dpo.get("train_loss"),
            "dpo_reward_accuracy": dpo.get("reward_accuracies_mean"),
            "dpo_status": statuses.get(f"dpo{t}"),
            "aift_seconds": seconds.get(f"aift{t}"),
            "dpo_seconds": seconds.get(f"dpo{t}"),
        })
        t += 1
    return {
        "sft_baseline": read_json(run_dir / "sft_baseline" / "sft.stats.json"),
        "eft": read_json(run_dir / "eft" / "eft.stats.json"),
        "sft": read_json(run_dir / "sft" / "sft.stats.json"),
        "iterations": iterations,
        "stage_seconds": seconds,
        "models": sorted(p.name for p in (run_dir / "models").iterdir() if (p / "config.json").exists()) if (run_dir / "models").exists() else [],
    }


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="selfreward run: per iteration", title_justify="left")
    columns = [
        ("iter", "iteration"), ("model", "model"), ("prompts", "prompts_kept"), ("candidates", "candidates"),
        ("judge parse", "judge_parse_rate"), ("judge valid", "judge_valid_rate"), ("pairs", "pairs"), ("pair yield", "pair_yield"), ("mean margin", "mean_margin"),
        ("DPO loss", "dpo_loss"), ("DPO reward acc", "dpo_reward_accuracy"), ("AIFT s", "aift_seconds"), ("DPO s", "dpo_seconds"),
    ]
    for title, _ in columns:
        table.add_column(title, justify="right")
    for row in summary["iterations"]:
        cells = []
        for _, key in columns:
            value = row.get(key)
            if key == "dpo_loss" and value is None and row.get("dpo_status"):
                value = row["dpo_status"]
            cells.append("-" if value is None else str(value))
        table.add_row(*cells)
    return table


def preamble_table(summary: dict[str, Any]) -> Table:
    table = Table(title="before the loop", title_justify="left")
    for title in ("stage", "examples", "result", "seconds"):
        table.add_column(title)
    base, eft, sft = summary["sft_baseline"], summary["eft"], summary["sft"]
    if base:
        table.add_row("SFT baseline (IFT)", str(base.get("examples")), f"loss {base.get('train_loss')}", str(base.get("seconds")))
    if eft:
        parse = f", judge parse rate {eft['judge_parse_rate']}" if eft.get("judge_parse_rate") is not None else ""
        table.add_row(f"EFT data ({eft.get('strategy', 'self')})", str(eft.get("examples")), f"{eft.get('train_groups_kept')}/{eft.get('train_groups_tried')} groups kept{parse}", str(eft.get("seconds")))
    if sft:
        table.add_row("M1 = SFT (IFT+EFT)", str(sft.get("examples")), f"loss {sft.get('train_loss')}", str(sft.get("seconds")))
    return table
