"""The `selfreward` command line."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.table import Table

from selfreward.config import Config, load_config
from selfreward.display import console_text
from selfreward.errors import SelfRewardError
from selfreward.lock import hold_lock

if TYPE_CHECKING:
    from selfreward.steps import AIFTStep

app = typer.Typer(
    help="Self-Rewarding Language Models: self-instruct, LLM-as-a-Judge and iterative DPO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Logs and pipes get wide tables instead of rich's 80-column default.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, soft_wrap=True)

ConfigArg = Annotated[str | None, typer.Argument(help="Preset name (demo, paper, ...) or YAML file. Default: demo.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a config key: section.key=value (repeatable).")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Directory for the stage's artifacts.")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="The model to use: a path or hub id (default: model.name_or_path).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Continue a directory made with a different config.")]


DEBUG_ENV = "SELFREWARD_DEBUG"
"""Set to 1 for the traceback of an unexpected error instead of one line (as `selfreward --debug` does)."""
show_tracebacks = False


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of an unexpected error.")]


def print_version(value: bool) -> None:
    if value:
        from selfreward import __version__

        typer.echo(f"selfreward {__version__}")
        raise typer.Exit()


VersionOpt = Annotated[
    bool, typer.Option("--version", callback=print_version, is_eager=True, help="Print the version and exit.")
]


@app.callback()
def main_options(debug: DebugOpt = False, version: VersionOpt = False) -> None:
    """Our own progress bars say what runs; silence the libraries' loading and mapping bars."""
    import datasets
    from transformers.utils import logging as hf_logging

    global show_tracebacks
    show_tracebacks = debug or os.environ.get(DEBUG_ENV) == "1"
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def unexpected(exc: Exception) -> str:
    """The one line shown for an error nobody anticipated (a bug, or input no check caught)."""
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    detail = f": {first[:300]}" if first else ""
    hint = "run with --debug for the traceback (selfreward --debug COMMAND ...)"
    return f"unexpected {type(exc).__name__}{detail}; {hint}"


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-fixable errors into one line on stderr (exit 2), Ctrl-C into a resume hint, and
    any other exception into one line (exit 1) unless --debug asks for its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SelfRewardError as exc:
            errors.print(f"[red]error:[/red] {console_text(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print(f"interrupted: finished records are saved; {SAME_COMMAND}")
            raise typer.Exit(130) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # the last resort: one line, never a traceback
            if show_tracebacks:
                raise
            errors.print(f"[red]error:[/red] {console_text(unexpected(exc))}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


DISK_ERRORS = {
    errno.ENOSPC: "free space",
    errno.EDQUOT: "free space",
    errno.EROFS: "make it writable",
    errno.EACCES: "make it writable",
}
SAME_COMMAND = "run the same command again to resume"


@contextmanager
def writing(directory: Path, resume: str = SAME_COMMAND) -> Iterator[None]:
    """Be the only writer of `directory`; a full or read-only disk becomes one line saying how to
    resume (the records written so far stay: every stage resumes from its last finished batch)."""
    try:
        with hold_lock(directory):
            yield
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        target = exc.filename or f"in {directory}"  # selfreward.records names the file it writes
        raise SelfRewardError(
            f"{os.strerror(exc.errno).lower()} while writing {target}; {DISK_ERRORS[exc.errno]} and {resume}"
        ) from None


def stats_table(title: str, stats: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="cyan")
    table.add_column("value")
    for key, value in stats.items():
        if key == "stage":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
        table.add_row(key, "-" if value is None else console_text(str(value)))
    return table


def show_stats(stats: dict[str, dict[str, Any]]) -> None:
    for stage, values in stats.items():
        console.print(stats_table(f"stage {stage}", values))


def _config(config: str | None, overrides: list[str] | None) -> Config:
    return load_config(config, overrides or [])


@app.command()
@friendly
def aift(
    config: ConfigArg = None,
    out: OutOpt = Path("runs/aift"),
    set_: SetOpt = None,
    model: ModelOpt = None,
    force: ForceOpt = False,
) -> None:
    """Create AIFT data for one model: prompts -> candidates -> judgments -> pairs (resumable)."""
    from selfreward.recipes.aift import run_aift

    cfg = _config(config, set_)
    with writing(out):
        show_stats(run_aift(cfg, out, model, force=force, console=console))
    console.print(f"pairs: {out / 'pairs.jsonl'}")


def stage_command(step: type[AIFTStep]) -> Callable[..., None]:
    """`selfreward STAGE`: one AIFT step on its own, into --out (its inputs must be there)."""

    def command(
        config: ConfigArg = None,
        out: OutOpt = Path("runs/aift"),
        set_: SetOpt = None,
        model: ModelOpt = None,
        force: ForceOpt = False,
    ) -> None:
        from selfreward.recipes.aift import run_aift

        with writing(out):
            show_stats(run_aift(_config(config, set_), out, model, force=force, console=console, stages=(step.stage,)))

    command.__doc__ = f"Stage {step.stage}: {(step.__doc__ or '').strip().splitlines()[0]}"
    return command


def register_stage_commands() -> None:
    from selfreward.recipes.aift import AIFT_STEPS

    for step in AIFT_STEPS:
        app.command(step.stage)(friendly(stage_command(step)))


register_stage_commands()


@app.command()
@friendly
def run(
    config: ConfigArg = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<preset>-<time>).")
    ] = None,
    set_: SetOpt = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the run in this directory.")] = None,
    force: ForceOpt = False,
) -> None:
    """The whole loop: SFT baseline, EFT, M1 = SFT, then AIFT(M_t) -> DPO -> M_{t+1} per iteration."""
    from datetime import datetime

    from selfreward.recipes.self_rewarding import self_rewarding, start
    from selfreward.rundir import open_run
    from selfreward.summary import preamble_table, summary_table, write_summary

    run_dir = (
        resume or out or Path("runs") / f"{Path(config).stem if config else 'demo'}-{datetime.now():%Y%m%d-%H%M%S}"
    )
    with writing(run_dir, f"resume with `selfreward run --resume {run_dir}`"):
        if resume is None:
            cfg = _config(config, set_)
            if (run_dir / "manifest.json").exists():
                raise SelfRewardError(
                    f"{run_dir} already holds a run; continue it with `selfreward run --resume {run_dir}`"
                )
        else:
            given = config is not None or bool(set_)
            saved = run_dir / "config.yaml"  # overrides apply to the run's own config unless CONFIG is given
            cfg = open_run(
                run_dir,
                _config(config or (str(saved) if saved.exists() else None), set_) if given else None,
                given,
                force,
            )
        console.print(f"run directory: {run_dir}")
        runner, data, ranked = start(cfg, run_dir, console, force)
        try:
            for step in self_rewarding(cfg, runner, data, ranked):
                runner.run(step)
            runner.finish()
        finally:
            runner.tools.engines.close()
        summary = write_summary(run_dir)
    console.print(preamble_table(summary))
    console.print(summary_table(summary, cfg))
    console.print(f"models: {', '.join(str(run_dir / 'models' / m) for m in summary['models'])}")
    print_learned(run_dir)
    console.print(f"next: selfreward ifeval {run_dir} --with-seed --prompts input_data.jsonl   (IFEval, no judge)")
    console.print(f"      selfreward eval {run_dir} --with-seed   (the judge on held-out ranked groups, head-to-head)")
    console.print(f"      selfreward report {run_dir}   ({run_dir / 'report.html'})")


def print_learned(run_dir: Path) -> None:
    """The "did it learn?" table (selfreward.learned) and what would fill in its gaps."""
    from selfreward.learned import TITLE, learning_table

    headers, rows, notes = learning_table(run_dir)
    table = Table(title=TITLE, title_justify="left")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*(console_text(c) for c in row))
    console.print(table)
    for note in notes:
        console.print(console_text(note))


RunDirArg = Annotated[Path, typer.Argument(help="A run directory made by `selfreward run`.")]
ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        help="A model to use: a checkpoint of RUN_DIR (M1, sft_baseline; M0: the seed model), a path or a hub id (repeatable; default: all in RUN_DIR/models).",
    ),
]


def writes_run_dir(command: Callable[..., Any]) -> Callable[..., Any]:
    """For a command that writes into its RUN_DIR argument: be its only writer (see `writing`)."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:  # typer passes every parameter by name
        with writing(kwargs["run_dir"]):
            return command(**kwargs)

    return wrapper


def _run_config(run_dir: Path, set_: list[str] | None) -> Config:
    """A run's own config plus overrides (eval settings such as the judge may change freely)."""
    from selfreward.rundir import open_run

    open_run(run_dir, None, False, False)  # a clear error when RUN_DIR is not a run
    return _config(str(run_dir / "config.yaml"), set_)


@app.command("eval")
@friendly
@writes_run_dir
def eval_(
    run_dir: RunDirArg,
    set_: SetOpt = None,
    models: ModelsOpt = None,
    no_h2h: Annotated[bool, typer.Option("--no-h2h", help="Skip head-to-head.")] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Delete earlier results in RUN_DIR/eval and start over.")
    ] = False,
    with_seed: Annotated[bool, typer.Option("--with-seed", help="Also evaluate the seed model M0.")] = False,
) -> None:
    """Reward-model metrics, test answers and head-to-head for every checkpoint of a run -> RUN_DIR/eval."""
    from selfreward.eval.runner import evaluate_run
    from selfreward.report import tables

    evaluate_run(
        run_dir, _run_config(run_dir, set_), console, models, head_to_head=not no_h2h, fresh=fresh, with_seed=with_seed
    )
    _print_tables(run_dir, ("Reward modelling", "Head-to-head", "Answer lengths"), tables)


def _print_tables(run_dir: Path, prefixes: tuple[str, ...], tables: Callable[[dict[str, Any]], list[Any]]) -> None:
    from selfreward.report import cell, gather

    for title, headers, rows in tables(gather(run_dir)):
        if title.startswith(prefixes):
            table = Table(title=console_text(title), title_justify="left")
            for header in headers:
                table.add_column(header, justify="right")
            for row in rows:
                table.add_row(*(console_text(cell(c)) for c in row))
            console.print(table)


@app.command()
@friendly
@writes_run_dir
def ifeval(
    run_dir: RunDirArg,
    prompts_file: Annotated[
        str | None,
        typer.Option(
            "--prompts",
            help="IFEval prompts (google's input_data.jsonl format). Default: eval.ifeval.prompts, else the google/IFEval dataset.",
        ),
    ] = None,
    set_: SetOpt = None,
    models: ModelsOpt = None,
    with_seed: Annotated[bool, typer.Option("--with-seed", help="Also evaluate the seed model M0.")] = False,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Delete earlier IFEval results in RUN_DIR/eval/ifeval and start over.")
    ] = False,
) -> None:
    """IFEval, no judge: greedy answers scored by lm-eval's checkers, with 95% intervals -> RUN_DIR/eval/ifeval."""
    from selfreward.eval.ifeval import evaluate_ifeval, seed_checkpoint
    from selfreward.eval.runner import run_models

    cfg = _run_config(run_dir, set_)
    checkpoints = (seed_checkpoint(cfg) if with_seed else {}) | run_models(run_dir, models, cfg.model.name_or_path)
    summary = evaluate_ifeval(run_dir, cfg, console, checkpoints, prompts_file, fresh)
    console.print(ifeval_table(summary))


def ifeval_table(summary: dict[str, Any]) -> Table:
    from selfreward.eval.ifeval import METRICS
    from selfreward.intervals import describe, verdict

    table = Table(title=f"IFEval on {summary['prompts']} prompts (%, 95% interval)", title_justify="left")
    for header in ("model", "prompt strict", "inst strict", "prompt loose", "inst loose", ""):
        table.add_column(header)
    for name, figures in summary["models"].items():
        table.add_row(name, *(describe(figures[m]) for m in METRICS), "")
    for d in summary["differences"]:
        table.add_row(
            f"{d['model']} - {d['baseline']}",
            *(describe(d[m], signed=True) for m in METRICS),
            verdict(d["prompt_strict"]),
        )
    return table


@app.command()
@friendly
@writes_run_dir
def alpaca(
    run_dir: RunDirArg,
    prompts_file: Annotated[
        Path, typer.Option("--prompts", help="AlpacaEval prompts: a JSON list of {instruction, ...}.")
    ],
    reference: Annotated[
        Path | None, typer.Option("--reference", help="Reference outputs (AlpacaEval format) for a win rate.")
    ] = None,
    set_: SetOpt = None,
    models: ModelsOpt = None,
) -> None:
    """AlpacaEval-style: model_outputs.json per checkpoint (for the official alpaca_eval) and a win rate vs a reference."""
    from selfreward.eval.benchmarks import run_alpaca
    from selfreward.eval.runner import run_models
    from selfreward.report import tables

    cfg = _run_config(run_dir, set_)
    for name, path in run_alpaca(
        run_dir, cfg, prompts_file, reference, run_models(run_dir, models, cfg.model.name_or_path)
    ).items():
        console.print(f"{name}: {path}")
    if reference:
        _print_tables(run_dir, ("AlpacaEval",), tables)


@app.command("mt-bench")
@friendly
@writes_run_dir
def mt_bench(
    run_dir: RunDirArg,
    questions: Annotated[Path, typer.Option("--questions", help="FastChat MT-Bench question.jsonl.")],
    grade: Annotated[
        bool, typer.Option("--grade", help="Also grade each turn 1-10 with the configured judge.")
    ] = False,
    set_: SetOpt = None,
    models: ModelsOpt = None,
) -> None:
    """MT-Bench: answers to both turns in FastChat's answer format, optionally graded by the judge."""
    from selfreward.eval.benchmarks import run_mt_bench
    from selfreward.eval.runner import run_models
    from selfreward.report import tables

    cfg = _run_config(run_dir, set_)
    for name, path in run_mt_bench(
        run_dir, cfg, questions, grade, run_models(run_dir, models, cfg.model.name_or_path)
    ).items():
        console.print(f"{name}: {path}")
    if grade:
        _print_tables(run_dir, ("MT-Bench",), tables)


@app.command()
@friendly
@writes_run_dir
def report(run_dir: RunDirArg) -> None:
    """Write RUN_DIR/report.md and a self-contained RUN_DIR/report.html (tables and plots)."""
    from selfreward.report import write_report
    from selfreward.rundir import open_run

    open_run(run_dir, None, False, False)
    md, page = write_report(run_dir)
    console.print(f"wrote {md} and {page}")


@app.command("config")
@friendly
def config_(
    config: ConfigArg = None,
    set_: SetOpt = None,
    list_: Annotated[bool, typer.Option("--list", help="List the presets and what each is for.")] = False,
) -> None:
    """Print the resolved config as YAML, each key's documentation as a comment (`selfreward run` reads it back)."""
    from selfreward.config_doc import commented_yaml, preset_summaries

    if list_:
        for name, summary in preset_summaries().items():
            console.print(f"{name:<12} {console_text(summary)}")
        return

    title = " ".join([f"selfreward config {config or 'demo'}", *(f"--set {item}" for item in set_ or [])])
    typer.echo(commented_yaml(_config(config, set_), title), nl=False)


@app.command()
@friendly
def data(
    sources: Annotated[list[str], typer.Argument(help="Data files, hub names or `demo`.")],
    ranked: Annotated[bool, typer.Option(help="Load ranked groups instead of IFT examples.")] = False,
    lang: str = "en",
) -> None:
    """Check seed data: rows read, usable, skipped (with the first bad row)."""
    from selfreward.seed_data import load_ift, load_ranked

    items, reports = (load_ranked if ranked else load_ift)(sources, lang)
    for report in reports:
        console.print(console_text(report.summary()))
    console.print(f"{len(items)} {'ranked groups' if ranked else 'IFT examples'}")


@app.command("env")
def env() -> None:
    """What to paste into a bug report: versions, devices, and the settings that change what runs."""
    from selfreward.rundir import environment

    for key, value in environment().items():
        console.print(f"{key}: {console_text(str(value))}")


@app.command("prepare-model")
@friendly
def prepare_model(
    name: Annotated[str, typer.Argument(help="Model name, id or path.")] = "smollm2-135m-instruct",
) -> None:
    """Convert the embedded model to safetensors in the cache (done automatically on first use)."""
    from selfreward.models import resolve_model

    console.print(resolve_model(name))


def main() -> None:  # pragma: no cover - `python -m selfreward`
    app(prog_name="selfreward", args=sys.argv[1:])
