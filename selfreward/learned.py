""" "Did it learn?": one table per run, first in the report and at the end of `selfreward run`.

Per model, each figure with its 95% interval and its change, also with an interval:
- DPO validation accuracy (the model's DPO stage): on held-out pairs, after training, and its
  change from before training;
- IFEval prompt-level strict accuracy (`selfreward ifeval`), change from M1 on the same prompts
  (M1's own: from M0);
- reward-model pairwise accuracy of the model's own judge on each held-out set of ranked groups
  (`selfreward eval`), change from M1 on the same groups.
A change whose interval holds 0 reads "no measurable change". A figure not measured yet names the
command that measures it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfreward.eval.runner import model_order
from selfreward.intervals import Estimate, describe, paired_difference_ci, verdict
from selfreward.records import read_json

BASELINE = "M1"
SEED_MODEL = "M0"  # the model M1 was trained from
TITLE = "Did it learn? (95% intervals; changes on the same pairs, prompts or groups)"


def change_text(change: Estimate | None, against: str) -> str:
    if not change or change.get("value") is None:
        return ""
    return f"; {describe(change, signed=True)} vs {against}: {verdict(change)}"


def dpo_cells(run_dir: Path, models: list[str]) -> dict[str, str]:
    """M_{t+1}: held-out accuracy after DPO t and its change from before."""
    cells = {}
    for name in models:
        order = model_order(name)
        if order[0] == 1 and order[1] >= 2:
            stats = read_json(run_dir / f"dpo{order[1] - 1}" / "validation.stats.json")
            if stats.get("pairs"):
                cells[name] = describe(stats["after"]["accuracy"]) + change_text(
                    stats["change"]["accuracy"], "before DPO"
                )
    return cells


def ifeval_cells(summary: dict[str, Any]) -> dict[str, str]:
    """Prompt-level strict accuracy; M_t's change from M1, and M1's from M0 (its SFT's start)."""
    changes = {(d["model"], d["baseline"]): d["prompt_strict"] for d in summary.get("differences", [])}
    cells = {}
    for name, figures in summary.get("models", {}).items():
        against = SEED_MODEL if name == BASELINE else BASELINE
        cells[name] = describe(figures["prompt_strict"]) + change_text(changes.get((name, against)), against)
    return cells


def rm_cells(rm: dict[str, dict[str, Any]], set_name: str) -> dict[str, str]:
    """Pairwise accuracy on one set, and its change from M1 on the same groups (groups resampled)."""
    base = rm.get(BASELINE, {}).get(set_name, {}).get("group_agreement")
    cells = {}
    for name, sets in rm.items():
        figures = sets.get(set_name)
        if not figures or "pairwise_accuracy_ci" not in figures:
            continue
        own = figures.get("group_agreement")
        change = None
        if base and own and name != BASELINE and len(base) == len(own):
            change = paired_difference_ci([g[0] for g in own], [g[0] for g in base], [g[1] for g in own])
        cells[name] = describe(figures["pairwise_accuracy_ci"]) + change_text(change, BASELINE)
    return cells


def learning_table(run_dir: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, rows, notes): the "did it learn?" table of a run; notes say which command fills in what is missing."""
    ifeval = read_json(run_dir / "eval" / "ifeval" / "summary.json")
    rm = read_json(run_dir / "eval" / "summary.json").get("rm", {})
    trained = (
        sorted((p.name for p in (run_dir / "models").iterdir() if (p / "config.json").exists()), key=model_order)
        if (run_dir / "models").is_dir()
        else []
    )
    models = sorted(set(trained) | set(ifeval.get("models", {})) | set(rm), key=model_order)
    columns: dict[str, dict[str, str]] = {"DPO validation acc % (held-out pairs)": dpo_cells(run_dir, models)}
    notes = []
    if ifeval.get("models"):
        columns[f"IFEval prompt strict % ({ifeval['prompts']} prompts)"] = ifeval_cells(ifeval)
    else:
        notes.append(f"IFEval not run yet: selfreward ifeval {run_dir} --with-seed --prompts input_data.jsonl")
    sets = sorted({s for per_model in rm.values() for s in per_model})
    for set_name in sets:
        columns[f"judge pairwise acc % on {set_name}"] = rm_cells(rm, set_name)
    if not sets:
        notes.append(f"reward modelling not run yet: selfreward eval {run_dir} --with-seed")
    rows = [[name, *(cells.get(name, "-") for cells in columns.values())] for name in models]
    return ["model", *columns], rows, notes
