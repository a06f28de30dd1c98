"""Step `select{t}` (`select`; the paper's checkpoint selection): which DPO checkpoint is M_{t+1}.

Every Trainer checkpoint the DPO stage kept (one each `dpo.save_steps` before the last step; the
last step's is not written: selfreward.training.no_last_step_checkpoint) and the final model
`dpo{t}/final` answer the validation prompts (`select.prompts`), and the judge (`select.judge`;
by default M_t itself) compares their answers with M_t's in both orders (selfreward.judging.pairwise: a prompt is a win
when both orders prefer the checkpoint, a loss when both prefer M_t, a tie otherwise). Win rate =
(wins + ties / 2) / prompts, in percent. The candidate with the highest win rate (among equals,
the later one) is copied to models/M{t+1} through a temporary directory renamed into place,
without the Trainer's optimizer state. Answers and verdicts are cached in dpo{t}/select, so a
resumed step redoes nothing finished and makes the same choice.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfreward.answers import generate_answers
from selfreward.batches import derive_seed
from selfreward.config import Config
from selfreward.engines import Engine, Sampling, judge_model, make_engine, make_judge_engine
from selfreward.errors import SelfRewardError
from selfreward.judging.pairwise import compare_answers
from selfreward.models import resolve_model
from selfreward.overlap import test_prompts
from selfreward.records import StageFiles, read_json, write_json
from selfreward.steps import Tools
from selfreward.training import checkpoint_step, complete_checkpoints

TRAINER_STATE = shutil.ignore_patterns(
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
    "global_step*",
    "latest",
    "zero_to_fp32.py",
)
"""Files of a Trainer checkpoint that are not the model: left out of the promoted copy."""


def candidates(stage_dir: Path, final_step: int) -> list[tuple[str, int, Path]]:
    """(name, step, directory) of each kept checkpoint before the last step (one at the last step, left
    by an older version, is the final model's weights), then the final model."""
    found = [
        (p.name, checkpoint_step(p), p)
        for p in complete_checkpoints(stage_dir / "trainer")
        if checkpoint_step(p) < final_step
    ]
    found.append(("final", final_step, stage_dir / "final"))
    for name, _, path in found:
        if not (path / "config.json").exists() or not any(path.glob("*.safetensors")):
            raise SelfRewardError(
                f"[select] {path} holds no full model (config.json, *.safetensors) to answer with; checkpoint {name} cannot be compared"
            )
    return found


def validation_prompts(run_dir: Path, config: Config) -> list[dict[str, Any]]:
    """`select.prompts` (at most `select.max_prompts`), read as `selfreward eval` reads eval.prompts."""
    prompts = test_prompts(run_dir, config.select.prompts, config.data.lang, config.select.max_prompts)
    if not prompts:
        raise SelfRewardError(
            f"select.prompts {config.select.prompts} gave no validation prompts (eft-eval comes from {run_dir}/eft/eval.jsonl; see eft.eval_fraction)"
        )
    return prompts


def answers_of(
    config: Config,
    model: Path,
    prompts: list[dict[str, Any]],
    out_dir: Path,
    name: str,
    seed: int,
    loaded: Engine | None = None,
) -> dict[str, str]:
    """`model`'s answers to `prompts` (cached in OUT/NAME.jsonl; the model is loaded only to make
    them, unless `loaded` is an engine already holding it)."""
    files = StageFiles(out_dir, name)
    if not files.done():
        engine = loaded or make_engine(config, str(model))
        try:
            sampling = Sampling(
                config.eval.answer_temperature, config.candidates.top_p, config.eval.answer_max_new_tokens
            )
            generate_answers(engine, prompts, out_dir, name, sampling, seed, config.engine.batch_size)
        finally:
            if loaded is None:
                engine.close()
    return {r["id"]: r["text"] for r in files.read()}


def promote(source: Path, target: Path) -> None:
    """Copy the model in `source` to `target` atomically: a temporary directory, then a rename.
    A copy, not a link: a Trainer saving a checkpoint again would write into a linked model."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=TRAINER_STATE)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def select_checkpoint(config: Config, run_dir: Path, t: int, current: Path, target: Path) -> dict[str, Any]:
    """Compare dpo{t}'s checkpoints with M_t (`current`), promote the best to `target`, write
    dpo{t}/select.stats.json and return it."""
    stage_dir, opponent = run_dir / f"dpo{t}", f"M{t}"
    found = candidates(stage_dir, read_json(stage_dir / "dpo.stats.json")["steps"])
    prompts = validation_prompts(run_dir, config)
    seed = derive_seed(config.seed, f"select{t}")
    answers = {
        name: answers_of(config, path, prompts, stage_dir / "select" / "answers", name, seed) for name, _, path in found
    }
    text = {p["id"]: p["prompt"] for p in prompts}
    judge_config = config.select.judge
    sampling = Sampling(judge_config.temperature, 1.0, judge_config.max_new_tokens)
    judge = make_judge_engine(config, judge_config, str(current))
    self_judge = judge_model(judge_config, str(current)) == resolve_model(str(current))  # the judge engine holds M_t
    try:
        baseline = answers_of(
            config, current, prompts, stage_dir / "select" / "answers", opponent, seed, judge if self_judge else None
        )
        results = [
            {"name": name, "step": step}
            | compare_answers(
                judge,
                text,
                answers[name],
                baseline,
                stage_dir / "select",
                f"{name}_vs_{opponent}",
                sampling,
                derive_seed(seed, name),
                config.engine.batch_size,
            )
            for name, step, _ in found
        ]
    finally:
        judge.close()
    best = max(range(len(found)), key=lambda i: (results[i]["win_rate"], i))
    promote(found[best][2], target)
    stats = {
        "stage": "select",
        "opponent": opponent,
        "judge": {"kind": judge_config.kind, "model": judge_config.model or str(current)},
        "prompts": len(prompts),
        "chosen": results[best]["name"],
        "chosen_step": results[best]["step"],
        "chosen_win_rate": results[best]["win_rate"],
        "candidates": [{k: v for k, v in r.items() if k != "stage"} for r in results],
        "model": str(target),
    }
    write_json(stage_dir / "select.stats.json", stats)
    return stats


def manifest_entry(stats: dict[str, Any]) -> dict[str, Any]:
    """What the run manifest records of a selection: the choice and every candidate's win rate."""
    return {
        "chosen": stats["chosen"],
        "chosen_win_rate": stats["chosen_win_rate"],
        "win_rates": {c["name"]: c["win_rate"] for c in stats["candidates"]},
    }


@dataclass(frozen=True)
class SelectCheckpoint:
    """dpo{t}'s checkpoints and final model against M_t (`current`); the best becomes `target` (M_{t+1})."""

    name: str
    config: Config
    run_dir: Path
    iteration: int
    current: Path
    target: Path

    def outputs(self) -> tuple[Path, ...]:
        return (self.target / "config.json", self.run_dir / f"dpo{self.iteration}" / "select.stats.json")

    def run(self, tools: Tools) -> dict[str, Any]:
        """Select, and give the runner the choice and every win rate for the manifest."""
        tools.engines.close()
        stats = select_checkpoint(self.config, self.run_dir, self.iteration, self.current, self.target)
        return stats | {"manifest": manifest_entry(stats)}
