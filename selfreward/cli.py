"""The `selfreward` command line."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from selfreward.config import Config, load_config
from selfreward.errors import SelfRewardError

app = typer.Typer(help="Self-Rewarding Language Models: self-instruct, LLM-as-a-Judge and iterative DPO.", no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

ConfigArg = Annotated[str | None, typer.Argument(help="Preset name (demo, paper, ...) or YAML file. Default: demo.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key: section.key=value (repeatable).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Directory for the stage's artifacts.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model to use instead of model.name_or_path.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Continue a directory made with a different config.")]


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-fixable errors into one line on stderr (exit 2) and Ctrl-C into a resume hint."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SelfRewardError as exc:
            errors.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print("interrupted: finished records are saved; run the same command again to resume")
            raise typer.Exit(130) from None

    return wrapper


def stats_table(title: str, stats: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="cyan")
    table.add_column("value")
    for key, value in stats.items():
        if key == "stage":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
        table.add_row(key, "-" if value is None else str(value))
    return table


def show_stats(stats: dict[str, dict[str, Any]]) -> None:
    for stage, values in stats.items():
        console.print(stats_table(f"stage {stage}", values))


def _config(config: str | None, overrides: list[str] | None) -> Config:
    return load_config(config, overrides or [])


@app.command()
@friendly
def aift(config: ConfigArg = None, out: OutOpt = Path("runs/aift"), set_: SetOpt = None, model: ModelOpt = None, force: ForceOpt = False) -> None:
    """Create AIFT data for one model: prompts -> candidates -> judgments -> pairs (resumable)."""
    from selfreward.aift import run_aift

    cfg = _config(config, set_)
    stats = run_aift(cfg, out, model=model, force=force, console=console)
    show_stats(stats)
    console.print(f"pairs: {out / 'pairs.jsonl'}")


def _stage(name: str, config: str | None, out: Path, set_: list[str] | None, model: str | None, force: bool) -> None:
    from selfreward.aift import bind_config
    from selfreward.engines import make_engine
    from selfreward.models import resolve_model
    from selfreward.seed import load_ift
    from selfreward.stages.candidates import generate_candidates
    from selfreward.stages.common import derive_seed
    from selfreward.stages.judge import judge_candidates
    from selfreward.stages.pairs import make_pairs
    from selfreward.stages.prompts import generate_prompts

    cfg = _config(config, set_)
    seed, batch = derive_seed(cfg.seed, f"aift-{name}"), cfg.engine.batch_size
    if name == "pairs":
        out.mkdir(parents=True, exist_ok=True)
        bind_config(out, cfg, force)
        show_stats({name: make_pairs(cfg.pairs, out)})
        return
    seed_prompts = [e.prompt for e in load_ift(cfg.data.ift, cfg.data.lang, cfg.data.max_ift)[0]] if name == "prompts" else []
    path = resolve_model(model or (cfg.prompts.generator if name == "prompts" and cfg.prompts.generator else cfg.model.name_or_path))
    out.mkdir(parents=True, exist_ok=True)
    bind_config(out, cfg, force)
    engine = make_engine(cfg, path)
    try:
        if name == "prompts":
            stats = generate_prompts(cfg.prompts, engine, seed_prompts, out, seed, batch)
        elif name == "candidates":
            stats = generate_candidates(cfg.candidates, engine, out, seed, batch)
        else:
            stats = judge_candidates(cfg.judge, engine, out, seed, batch)
    finally:
        engine.close()
    show_stats({name: stats})


@app.command()
@friendly
def prompts(config: ConfigArg = None, out: OutOpt = Path("runs/aift"), set_: SetOpt = None, model: ModelOpt = None, force: ForceOpt = False) -> None:
    """Stage prompts: new prompts by few-shot self-instruct -> OUT/prompts.jsonl."""
    _stage("prompts", config, out, set_, model, force)


@app.command()
@friendly
def candidates(config: ConfigArg = None, out: OutOpt = Path("runs/aift"), set_: SetOpt = None, model: ModelOpt = None, force: ForceOpt = False) -> None:
    """Stage candidates: N answers per prompt of OUT/prompts.jsonl -> OUT/candidates.jsonl."""
    _stage("candidates", config, out, set_, model, force)


@app.command()
@friendly
def judge(config: ConfigArg = None, out: OutOpt = Path("runs/aift"), set_: SetOpt = None, model: ModelOpt = None, force: ForceOpt = False) -> None:
    """Stage judge: K judgments per candidate of OUT/candidates.jsonl -> OUT/judgments.jsonl."""
    _stage("judge", config, out, set_, model, force)


@app.command()
@friendly
def pairs(config: ConfigArg = None, out: OutOpt = Path("runs/aift"), set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Stage pairs: best-vs-worst pairs from OUT/judgments.jsonl -> OUT/pairs.jsonl."""
    _stage("pairs", config, out, set_, None, force)


@app.command()
@friendly
def run(
    config: ConfigArg = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<preset>-<time>).")] = None,
    set_: SetOpt = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in this directory.")] = None,
    force: ForceOpt = False,
) -> None:
    """The whole loop: SFT baseline, EFT, M1 = SFT, then AIFT(M_t) -> DPO -> M_{t+1} per iteration."""
    from datetime import datetime

    from selfreward.pipeline import open_run, preamble_table, run_pipeline, summary_table

    if resume is not None:
        given = config is not None or bool(set_)
        saved = resume / "config.yaml"  # overrides apply to the run's own config unless CONFIG is given
        cfg = open_run(resume, _config(config or (str(saved) if saved.exists() else None), set_) if given else None, given, force)
        run_dir = resume
    else:
        cfg = _config(config, set_)
        name = Path(config).stem if config else "demo"
        run_dir = out or Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
        if (run_dir / "manifest.json").exists():
            raise SelfRewardError(f"{run_dir} already holds a run; continue it with `selfreward run --resume {run_dir}`")
    console.print(f"run directory: {run_dir}")
    summary = run_pipeline(cfg, run_dir, console, force=force)
    console.print(preamble_table(summary))
    console.print(summary_table(summary))
    console.print(f"models: {', '.join(str(run_dir / 'models' / m) for m in summary['models'])}")


@app.command()
@friendly
def data(sources: Annotated[list[str], typer.Argument(help="Data files, hub names or `demo`.")], ranked: Annotated[bool, typer.Option(help="Load ranked groups instead of IFT examples.")] = False, lang: str = "en") -> None:
    """Check seed data: rows read, usable, skipped (with the first bad row)."""
    from selfreward.seed import load_ift, load_ranked

    items, reports = (load_ranked if ranked else load_ift)(sources, lang)
    for report in reports:
        console.print(report.summary())
    console.print(f"{len(items)} {'ranked groups' if ranked else 'IFT examples'}")


@app.command("prepare-model")
@friendly
def prepare_model(name: Annotated[str, typer.Argument(help="Model name, id or path.")] = "smollm2-135m-instruct") -> None:
    """Convert the embedded model to safetensors in the cache (done automatically on first use)."""
    from selfreward.models import resolve_model

    console.print(resolve_model(name))


def main() -> None:  # pragma: no cover - `python -m selfreward`
    app(prog_name="selfreward", args=sys.argv[1:])
