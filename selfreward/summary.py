"""The run summary: per-stage and per-iteration figures read from the stats files the stages
wrote (the figures each step shows are declared with its class: `columns`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from selfreward.config import Config, build_config, yaml_load
from selfreward.intervals import describe
from selfreward.recipes.aift import enabled_steps
from selfreward.records import read_json, write_json
from selfreward.stages.dpo import TrainDPO
from selfreward.stages.dpo_validation import ValidateDPO
from selfreward.steps import Column

TIMING_COLUMNS = (Column("AIFT s", "aift_seconds"), Column("DPO s", "dpo_seconds"))


def run_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    return build_config((yaml_load(path.read_text(encoding="utf-8")) if path.exists() else None) or {})


def iteration_sources(config: Config, run_dir: Path, t: int) -> list[tuple[Path, tuple[Column, ...]]]:
    """The stats files of iteration t with the columns the summary takes from each, in order."""
    sources = [(run_dir / f"iter{t}" / f"{step.files}.stats.json", step.columns) for step in enabled_steps(config)]
    return [
        *sources,
        (run_dir / f"dpo{t}" / "dpo.stats.json", TrainDPO.columns),
        (run_dir / f"dpo{t}" / "validation.stats.json", ValidateDPO.columns),
    ]


def figure_columns(config: Config) -> list[Column]:
    """The figures the stages and timings give each iteration, in table order."""
    return [c for _, stage_columns in iteration_sources(config, Path(), 1) for c in stage_columns] + list(
        TIMING_COLUMNS
    )


def summary_columns(config: Config) -> list[Column]:
    """Every per-iteration column of the summary: the iteration, its model, then its figures."""
    return [Column("iter", "iteration"), Column("model", "model"), *figure_columns(config)]


def iteration_row(config: Config, run_dir: Path, t: int, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"iteration": t, "model": f"M{t}"}
    for path, columns in iteration_sources(config, run_dir, t):
        stats = read_json(path)
        row |= {c.name: c.read(stats) for c in columns}
    row["dpo_status"] = stages.get(f"dpo{t}", {}).get("status")
    aift = [s["seconds"] for name, s in stages.items() if name.startswith(f"iter{t}/") and s.get("seconds") is not None]
    row["aift_seconds"] = round(sum(aift), 1) if aift else None
    row["dpo_seconds"] = stages.get(f"dpo{t}", {}).get("seconds")
    return row


def summarize(run_dir: Path) -> dict[str, Any]:
    """Per-stage and per-iteration figures gathered from the run's stats files and manifest."""
    config = run_config(run_dir)
    stages = read_json(run_dir / "manifest.json").get("stages", {})
    iterations = []
    t = 1
    while (run_dir / f"iter{t}").exists():
        iterations.append(iteration_row(config, run_dir, t, stages))
        t += 1
    models = run_dir / "models"
    return {
        "sft_baseline": read_json(run_dir / "sft_baseline" / "sft.stats.json"),
        "eft": read_json(run_dir / "eft" / "eft.stats.json"),
        "sft": read_json(run_dir / "sft" / "sft.stats.json"),
        "self_distill": read_json(run_dir / "self_distill" / "self_distill.stats.json"),
        "m1_data": m1_data(config),
        "iterations": iterations,
        "stage_seconds": {name: s.get("seconds") for name, s in stages.items()},
        "models": sorted(p.name for p in models.iterdir() if (p / "config.json").exists()) if models.exists() else [],
    }


def m1_data(config: Config) -> str:
    """What M1's SFT trained on, and for how long, in words."""
    if not config.sft.m1_with_ift:
        data = "EFT"
    else:
        data = "IFT answered by M0 + EFT" if config.sft.m1_self_distill else "IFT + EFT"
    return f"{data}, {config.sft.for_m1().epochs:g} epochs"


def write_summary(run_dir: Path) -> dict[str, Any]:
    summary = summarize(run_dir)
    write_json(run_dir / "summary.json", summary)
    return summary


def shown(column: Column, value: Any) -> Any:
    """An interval estimate as `value [low, high]` (in % for a share); other values as they are."""
    if isinstance(value, dict) and "value" in value:
        return describe(value) if column.percent else describe(value, scale=1.0, digits=3)
    return value


def iteration_cells(row: dict[str, Any], columns: list[Column]) -> list[Any]:
    """A summary row's values in column order; a DPO that did not run shows its status."""
    cells = [shown(c, row.get(c.name)) for c in columns]
    return [row.get("dpo_status") if c.name == "dpo_loss" and v is None else v for c, v in zip(columns, cells)]


def summary_table(summary: dict[str, Any], config: Config) -> Table:
    """One row per figure, one column per iteration: readable in an 80-column terminal."""
    table = Table(title="selfreward run: per iteration", title_justify="left")
    figures = figure_columns(config)
    table.add_column("")
    for row in summary["iterations"]:
        table.add_column(f"iter {row['iteration']} ({row['model']})", justify="right")
    cells = [iteration_cells(row, figures) for row in summary["iterations"]]
    for i, figure in enumerate(figures):
        table.add_row(figure.title, *("-" if values[i] is None else str(values[i]) for values in cells))
    return table


def preamble_rows(summary: dict[str, Any]) -> list[list[str]]:
    """The stages before the loop as [stage, examples, result, seconds] rows (terminal and report)."""
    rows: list[list[Any]] = []
    if base := summary["sft_baseline"]:
        rows.append(["SFT baseline (IFT)", base.get("examples"), f"loss {base.get('train_loss')}", base.get("seconds")])
    if eft := summary["eft"]:
        parse = f", judge parse rate {eft['judge_parse_rate']}" if eft.get("judge_parse_rate") is not None else ""
        rows.append(
            [
                f"EFT data ({eft.get('strategy', 'self')})",
                eft.get("examples"),
                f"{eft.get('train_groups_kept')}/{eft.get('train_groups_tried')} groups kept{parse}",
                eft.get("seconds"),
            ]
        )
    if distill := summary.get("self_distill"):
        rows.append(
            [
                "M0's IFT answers (self-distill)",
                distill.get("kept"),
                f"{distill.get('kept')}/{distill.get('prompts')} finished, {distill.get('mean_tokens')} tokens",
                distill.get("seconds"),
            ]
        )
    if sft := summary["sft"]:
        rows.append(
            [
                f"M1 = SFT ({summary['m1_data']})",
                sft.get("examples"),
                f"loss {sft.get('train_loss')}",
                sft.get("seconds"),
            ]
        )
    return [["-" if cell is None else str(cell) for cell in row] for row in rows]


def preamble_table(summary: dict[str, Any]) -> Table:
    table = Table(title="before the loop", title_justify="left")
    for title in ("stage", "examples", "result", "seconds"):
        table.add_column(title)
    for row in preamble_rows(summary):
        table.add_row(*row)
    return table
