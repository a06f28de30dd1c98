"""`selfreward eval RUN_DIR`: RM metrics, answers and head-to-head for every checkpoint of a run."""

from __future__ import annotations

import json
import re
import shutil
from itertools import pairwise
from pathlib import Path
from typing import Any

from rich.console import Console

from selfreward.answers import generate_answers
from selfreward.batches import derive_seed
from selfreward.config import Config, config_differences, config_to_dict
from selfreward.engines import Sampling, make_engine, make_judge_engine
from selfreward.errors import SelfRewardError
from selfreward.eval.rm import evaluate_rm
from selfreward.judging.pairwise import compare_answers
from selfreward.models import resolve_model
from selfreward.overlap import group_rows, test_prompts
from selfreward.records import StageFiles, read_json, read_jsonl, write_json
from selfreward.seed_data import load_ranked


def model_order(name: str) -> tuple[int, int]:
    match = re.fullmatch(r"M(\d+)", name)
    return (1, int(match.group(1))) if match else (0, 0)


def run_models(run_dir: Path, wanted: list[str] | None = None, seed_model: str | None = None) -> dict[str, Path]:
    """Models by name: checkpoints of the run (sft_baseline, M1, M2, ...; default: all, checked to hold
    weights), `M0` for `seed_model`, or a path or hub id (named by its last part): what `--model` means."""
    root = run_dir / "models"
    found = (
        sorted((p.name for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")), key=model_order)
        if root.is_dir()
        else []
    )
    names = wanted or found
    if not names:
        raise SelfRewardError(f"{run_dir} has no checkpoints in models/ (is it a finished `selfreward run`?)")
    out = {}
    for name in names:
        if name in found:
            path = root / name
            if not (path / "config.json").exists() or not any(path.glob("*.safetensors")):
                raise SelfRewardError(f"checkpoint {path} is incomplete (no config.json or *.safetensors)")
            out[name] = path
        elif name == "M0" and seed_model:
            out[name] = Path(resolve_model(seed_model))
        elif Path(name).expanduser().is_dir() or name.count("/") == 1:
            out[Path(name).name] = Path(resolve_model(name))
        else:
            raise SelfRewardError(
                f"model {name} is not a checkpoint of {root} (found: {', '.join(found) or 'none'}; M0: the seed model) nor a model directory"
            )
    return out


def rm_sets(run_dir: Path, config: Config) -> dict[str, list[dict[str, Any]]]:
    """Named sets of ranked groups: the run's EFT eval split plus `eval.ranked` sources."""
    sets: dict[str, list[dict[str, Any]]] = {}
    eft_eval = run_dir / "eft" / "eval.jsonl"
    if eft_eval.exists():
        sets["eft-eval"] = read_jsonl(eft_eval)
    for source in config.eval.ranked:
        groups, _ = load_ranked([source], config.data.lang)
        sets[Path(source).stem if source != "demo" else "demo"] = group_rows(groups)
    limit = config.eval.rm_max_groups
    return {name: rows[:limit] if limit else rows for name, rows in sets.items() if rows}


CACHE_FREE_KEYS = {
    "after_iteration",
    "judge",
    "ifeval",
}  # head-to-head results live under the judge's own name; ifeval binds its own


def eval_settings(config: Config) -> dict[str, Any]:
    """The settings cached evaluation results depend on (the model's judge prompt and sampling too)."""
    data = config_to_dict(config)
    settings = {k: v for k, v in data["eval"].items() if k not in CACHE_FREE_KEYS}
    judge = data["eval"]["judge"]
    settings["h2h_judge_sampling"] = {"temperature": judge["temperature"], "max_new_tokens": judge["max_new_tokens"]}
    return settings | {"judge": data["judge"], "engine_batch_size": data["engine"]["batch_size"], "seed": data["seed"]}


def bind_eval_settings(eval_dir: Path, config: Config, fresh: bool) -> None:
    """Cached results are reused only with the settings they were made with."""
    path = eval_dir / "eval_settings.json"
    settings = eval_settings(config)
    if fresh and eval_dir.exists():
        shutil.rmtree(eval_dir)
    if path.exists():
        changed = config_differences(json.loads(path.read_text()), settings)
        if changed:
            raise SelfRewardError(
                f"{eval_dir} holds results made with other settings (differs in: {', '.join(changed)}); add --fresh to evaluate from scratch"
            )
    eval_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, settings)


def evaluate_run(
    run_dir: Path,
    config: Config,
    console: Console,
    models: list[str] | None = None,
    head_to_head: bool = True,
    fresh: bool = False,
    with_seed: bool = False,
    eval_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate a run's checkpoints (and the seed model M0 with `with_seed`) into `eval_dir` (default
    RUN_DIR/eval). Results of earlier calls (other models, other judges) stay in the summary, and
    head-to-head also takes in the answers of models evaluated before."""
    checkpoints = run_models(run_dir, models, config.model.name_or_path)
    if with_seed:
        checkpoints = {"M0": Path(resolve_model(config.model.name_or_path))} | checkpoints
    eval_dir = eval_dir or run_dir / "eval"
    sets = rm_sets(run_dir, config)
    prompts = test_prompts(run_dir, config.eval.prompts, config.data.lang, config.eval.max_prompts)
    if not sets and not prompts:
        raise SelfRewardError(
            f"nothing to evaluate: {run_dir}/eft/eval.jsonl is missing and eval.ranked / eval.prompts are empty"
        )
    bind_eval_settings(eval_dir, config, fresh)
    previous = read_json(eval_dir / "summary.json")
    summary: dict[str, Any] = {
        "rm": previous.get("rm", {}),
        "answers": previous.get("answers", {}),
        "head_to_head": previous.get("head_to_head", []),
    }
    for name, path in checkpoints.items():
        console.print(f"[bold]evaluating {name}[/bold]")
        evaluate_checkpoint(config, name, path, sets, prompts, eval_dir, summary)
    answers = earlier_answers(eval_dir / "answers", list(summary["answers"])) if prompts else {}
    if head_to_head and len(answers) > 1:
        run_head_to_head(config, prompts, answers, eval_dir, summary)
    summary["rm"], summary["answers"] = by_model(summary["rm"]), by_model(summary["answers"])
    write_json(eval_dir / "summary.json", summary)
    return summary


def evaluate_checkpoint(
    config: Config,
    name: str,
    path: Path,
    sets: dict[str, list[dict[str, Any]]],
    prompts: list[dict[str, Any]],
    eval_dir: Path,
    summary: dict[str, Any],
) -> None:
    """Reward-model metrics on every set and answers to the test prompts of one checkpoint (cached)."""
    engine = make_engine(config, str(path))
    try:
        summary["rm"][name] = {
            set_name: evaluate_rm(
                config,
                engine,
                groups,
                eval_dir / "rm" / set_name,
                name,
                derive_seed(config.seed, f"eval-rm-{set_name}-{name}"),
            )
            for set_name, groups in sets.items()
        }
        if prompts:
            sampling = Sampling(
                config.eval.answer_temperature, config.candidates.top_p, config.eval.answer_max_new_tokens
            )
            generate_answers(
                engine,
                prompts,
                eval_dir / "answers",
                name,
                sampling,
                derive_seed(config.seed, "eval-answers"),
                config.engine.batch_size,
            )
            summary["answers"][name] = read_json(eval_dir / "answers" / f"{name}.stats.json")
    finally:
        engine.close()


def earlier_answers(answers_dir: Path, names: list[str]) -> dict[str, dict[str, str]]:
    """Answers on disk (prompt id -> text) of the models evaluated so far, in model order."""
    found = {}
    for name in sorted(names, key=model_order):
        files = StageFiles(answers_dir, name)
        if files.done():
            found[name] = {r["id"]: r["text"] for r in files.read()}
    return found


def run_head_to_head(
    config: Config,
    prompts: list[dict[str, Any]],
    answers: dict[str, dict[str, str]],
    eval_dir: Path,
    summary: dict[str, Any],
) -> None:
    """The paper's matches among the answered models, judged in both orders (finished ones are cached)."""
    label = judge_label(config)
    judge = make_judge_engine(config, config.eval.judge, resolve_model(config.model.name_or_path))
    judge_sampling = Sampling(config.eval.judge.temperature, 1.0, config.eval.judge.max_new_tokens)
    text = {p["id"]: p["prompt"] for p in prompts}
    try:
        for x, y in head_to_head_pairs(list(answers)):
            stats = compare_answers(
                judge,
                text,
                answers[x],
                answers[y],
                eval_dir / "h2h" / label,
                f"{x}_vs_{y}",
                judge_sampling,
                derive_seed(config.seed, f"h2h-{x}-{y}"),
                config.engine.batch_size,
            )
            summary["head_to_head"] = [
                h for h in summary["head_to_head"] if (h["model"], h["opponent"], h.get("judge")) != (x, y, label)
            ]
            summary["head_to_head"].append(
                {"model": x, "opponent": y, "judge": label, **{k: v for k, v in stats.items() if k != "stage"}}
            )
    finally:
        judge.close()


def by_model(results: dict[str, Any]) -> dict[str, Any]:
    """Per-model results in model order: sft_baseline, M0, M1, M2, ..."""
    return dict(sorted(results.items(), key=lambda item: model_order(item[0])))


def head_to_head_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Each iteration model against the SFT baseline and against its predecessor, as in the paper."""
    iterations = [n for n in names if model_order(n)[0] == 1 and model_order(n)[1] >= 1]  # M1, M2, ... (not M0)
    pairs = [(m, "sft_baseline") for m in iterations if "sft_baseline" in names]
    pairs += [(b, a) for a, b in pairwise(iterations)]
    return pairs


def judge_label(config: Config) -> str:
    judge = config.eval.judge
    name = judge.model or ("seed-" + Path(config.model.name_or_path).name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{judge.kind}-{name}")
