"""AlpacaEval-style and MT-Bench answer files in the official tools' formats.

- AlpacaEval: prompts are a JSON list of `{instruction, ...}`; answers go to `model_outputs.json`
  as `{instruction, output, generator}` (other input fields kept), ready for `alpaca_eval`; a
  win rate against a reference outputs file uses the configured judge (both orders, ties half).
- MT-Bench: questions are FastChat's `question.jsonl` (`question_id`, `category`, `turns`); both
  turns are answered, the second with the first exchange as history, and written in FastChat's
  answer format (`question_id`, `answer_id`, `model_id`, `choices[0].turns`, `tstamp`). Optional
  single-answer grading (1-10) by the configured judge.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selfreward.batches import WorkItem, derive_seed, mean, run_batches
from selfreward.config import Config
from selfreward.engines import make_engine, make_judge_engine
from selfreward.engines.base import Engine, Request, Sampling
from selfreward.errors import SelfRewardError
from selfreward.judging.pairwise import compare_answers
from selfreward.judging.rating_10pt import RATING_10PT
from selfreward.judging.responses import JudgeItem, PointJudgment, judge_responses
from selfreward.models import resolve_model
from selfreward.records import StageFiles, read_json, read_jsonl, write_atomic, write_json


def read_alpaca(path: Path, need_output: bool = False) -> list[dict[str, Any]]:
    """Rows of an AlpacaEval JSON file; a wrong shape is one clear error."""
    if not path.is_file():
        raise SelfRewardError(f"file not found: {path}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SelfRewardError(
            f"{path} is not AlpacaEval format: not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    field = "output" if need_output else "instruction"
    if (
        not isinstance(rows, list)
        or not rows
        or not all(
            isinstance(r, dict) and isinstance(r.get("instruction"), str) and isinstance(r.get(field), str)
            for r in rows
        )
    ):
        raise SelfRewardError(
            f"{path} is not AlpacaEval format: expected a non-empty JSON list of objects with string `instruction`{' and `output`' if need_output else ''}"
        )
    return rows


def alpaca_outputs(
    engine: Engine,
    rows: list[dict[str, Any]],
    generator: str,
    out_dir: Path,
    sampling: Sampling,
    seed: int,
    batch_size: int,
) -> list[dict[str, Any]]:
    files = StageFiles(out_dir, "answers")
    items = [WorkItem(f"a{i:05d}", Request.user(r["instruction"]), {}) for i, r in enumerate(rows)]
    if files.done():
        records = files.read()
    else:
        run = run_batches(files, items, engine, sampling, seed, batch_size, f"alpaca {generator}")
        records = run.records
        files.finish(
            records,
            {"stage": "alpaca-answers", "answers": len(records), "mean_chars": mean([len(r["text"]) for r in records])},
        )
    outputs = [r | {"output": rec["text"], "generator": generator} for r, rec in zip(rows, records)]
    write_atomic(out_dir / "model_outputs.json", json.dumps(outputs, indent=2, ensure_ascii=False) + "\n")
    return outputs


def alpaca_win_rate(
    judge: Engine,
    outputs: list[dict[str, Any]],
    reference: list[dict[str, Any]],
    out_dir: Path,
    sampling: Sampling,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    ref = {r["instruction"]: r["output"] for r in reference}
    shared = [o for o in outputs if o["instruction"] in ref]
    if not shared:
        raise SelfRewardError("no instruction of the model outputs appears in the reference outputs file")
    prompts = {f"a{i:05d}": o["instruction"] for i, o in enumerate(shared)}
    mine = {pid: o["output"] for pid, o in zip(prompts, shared)}
    theirs = {pid: ref[o["instruction"]] for pid, o in zip(prompts, shared)}
    stats = compare_answers(judge, prompts, mine, theirs, out_dir, "vs_reference", sampling, seed, batch_size)
    return {k: v for k, v in stats.items() if k != "stage"} | {
        "mean_output_chars": mean([len(o["output"]) for o in shared]),
        "mean_reference_chars": mean([len(theirs[p]) for p in prompts]),
    }


def read_mt_bench(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise SelfRewardError(f"file not found: {path}")
    try:
        rows = read_jsonl(path)
    except json.JSONDecodeError:
        raise SelfRewardError(f"{path} is not FastChat question.jsonl: a line is not valid JSON") from None
    if not rows or not all(
        isinstance(r.get("turns"), list)
        and r["turns"]
        and all(isinstance(t, str) for t in r["turns"])
        and "question_id" in r
        for r in rows
    ):
        raise SelfRewardError(
            f"{path} is not FastChat question.jsonl: expected rows with `question_id` and a list of string `turns`"
        )
    return rows


def mt_bench_answers(
    engine: Engine,
    questions: list[dict[str, Any]],
    model_id: str,
    out_dir: Path,
    sampling: Sampling,
    seed: int,
    batch_size: int,
) -> Path:
    """Answer every turn (turn k sees turns < k and the model's own answers) -> FastChat answer file."""
    answers: dict[Any, list[str]] = {q["question_id"]: [] for q in questions}
    for turn in range(max(len(q["turns"]) for q in questions)):
        files = StageFiles(out_dir, f"{model_id}.turn{turn + 1}")
        items = []
        for q in questions:
            if turn < len(q["turns"]):
                history: list[tuple[str, str]] = []
                for k in range(turn):
                    history += [("user", q["turns"][k]), ("assistant", answers[q["question_id"]][k])]
                items.append(
                    WorkItem(
                        f"q{q['question_id']}-t{turn + 1}",
                        Request((*history, ("user", q["turns"][turn]))),
                        {"question_id": q["question_id"]},
                    )
                )
        records = (
            files.read()
            if files.done()
            else run_batches(
                files, items, engine, sampling, seed + turn, batch_size, f"mt-bench turn {turn + 1}"
            ).records
        )
        if not files.done():
            files.finish(records, {"stage": "mt-bench-answers", "turn": turn + 1, "answers": len(records)})
        for record in records:
            answers[record["question_id"]].append(record["text"])
    lines = []
    for q in questions:
        answer_id = hashlib.sha256(f"{model_id}:{q['question_id']}".encode()).hexdigest()[:22]
        lines.append(
            json.dumps(
                {
                    "question_id": q["question_id"],
                    "answer_id": answer_id,
                    "model_id": model_id,
                    "choices": [{"index": 0, "turns": answers[q["question_id"]]}],
                    "tstamp": time.time(),
                },
                ensure_ascii=False,
            )
        )
    path = out_dir / f"{model_id}.jsonl"
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def grade_mt_bench(
    judge: Engine,
    questions: list[dict[str, Any]],
    answer_file: Path,
    out_dir: Path,
    sampling: Sampling,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """Single-answer grading of every turn on 1-10 by the judge (the `rating_10pt` scale); unparsable ratings are counted."""
    by_id = {
        json.loads(line)["question_id"]: json.loads(line)["choices"][0]["turns"]
        for line in answer_file.read_text().splitlines()
    }
    items = []
    for q in questions:
        for turn, answer in enumerate(by_id[q["question_id"]]):
            context = "".join(
                f"(earlier turn) User: {q['turns'][k]}\nAssistant: {by_id[q['question_id']][k]}\n\n"
                for k in range(turn)
            )
            fields = {"instruction": context + q["turns"][turn], "response": answer}
            items.append(
                JudgeItem(
                    f"q{q['question_id']}-t{turn + 1}",
                    fields,
                    {"question_id": q["question_id"], "turn": turn + 1, "category": q.get("category")},
                )
            )
    files = StageFiles(out_dir, answer_file.stem + ".grades")
    records = judge_responses(
        judge, PointJudgment.of(RATING_10PT), items, 1, sampling, files, seed, batch_size, "mt-bench grading"
    ).records
    ratings = [r["text_score"] for r in records if r["text_score"] is not None]
    stats = {
        "stage": "mt-bench-grades",
        "graded": len(ratings),
        "unparsable": len(records) - len(ratings),
        "score": mean(ratings),
    }
    for turn in (1, 2):
        stats[f"score_turn{turn}"] = mean(
            [r["text_score"] for r in records if r["turn"] == turn and r["text_score"] is not None]
        )
    files.finish(records, stats)
    return stats


def run_alpaca(
    run_dir: Path, config: Config, prompts_file: Path, reference: Path | None, checkpoints: dict[str, Path]
) -> dict[str, Path]:
    """`selfreward alpaca`: each checkpoint's model_outputs.json (RUN/eval/alpaca/NAME), and with
    `reference` each one's win rate against it by `eval.judge` (RUN/eval/benchmarks.json)."""
    rows = read_alpaca(prompts_file)
    ref_rows = read_alpaca(reference, need_output=True) if reference else None
    sampling = Sampling(config.eval.answer_temperature, config.candidates.top_p, config.eval.answer_max_new_tokens)
    outputs, files = {}, {}
    for name, path in checkpoints.items():
        engine = make_engine(config, str(path))
        try:
            outputs[name] = alpaca_outputs(
                engine,
                rows,
                name,
                run_dir / "eval" / "alpaca" / name,
                sampling,
                derive_seed(config.seed, "alpaca"),
                config.engine.batch_size,
            )
        finally:
            engine.close()
        files[name] = run_dir / "eval" / "alpaca" / name / "model_outputs.json"
    if ref_rows is not None:
        results = read_json(run_dir / "eval" / "benchmarks.json")
        with judge_of(config) as (judge, judge_sampling):
            for name in checkpoints:
                seed = derive_seed(config.seed, f"alpaca-judge-{name}")
                results.setdefault("alpaca", {})[name] = alpaca_win_rate(
                    judge,
                    outputs[name],
                    ref_rows,
                    run_dir / "eval" / "alpaca" / name,
                    judge_sampling,
                    seed,
                    config.engine.batch_size,
                )
        write_json(run_dir / "eval" / "benchmarks.json", results)
    return files


def run_mt_bench(
    run_dir: Path, config: Config, questions: Path, grade: bool, checkpoints: dict[str, Path]
) -> dict[str, Path]:
    """`selfreward mt-bench`: each checkpoint's answers to both turns in FastChat's format (RUN/eval/mt_bench),
    with `grade` each one graded 1-10 by `eval.judge` (RUN/eval/benchmarks.json)."""
    rows = read_mt_bench(questions)
    out_dir = run_dir / "eval" / "mt_bench"
    sampling = Sampling(config.eval.answer_temperature, config.candidates.top_p, config.eval.answer_max_new_tokens)
    files = {}
    for name, path in checkpoints.items():
        engine = make_engine(config, str(path))
        try:
            files[name] = mt_bench_answers(
                engine, rows, name, out_dir, sampling, derive_seed(config.seed, "mt-bench"), config.engine.batch_size
            )
        finally:
            engine.close()
    if grade:
        results = read_json(run_dir / "eval" / "benchmarks.json")
        with judge_of(config) as (judge, judge_sampling):
            for name, answer_file in files.items():
                results.setdefault("mt_bench", {})[name] = grade_mt_bench(
                    judge,
                    rows,
                    answer_file,
                    out_dir,
                    judge_sampling,
                    derive_seed(config.seed, f"mt-grade-{name}"),
                    config.engine.batch_size,
                )
        write_json(run_dir / "eval" / "benchmarks.json", results)
    return files


@contextmanager
def judge_of(config: Config) -> Iterator[tuple[Engine, Sampling]]:
    """`eval.judge` (default: the seed model M0) and how it samples, closed after."""
    judge = make_judge_engine(config, config.eval.judge, resolve_model(config.model.name_or_path))
    try:
        yield judge, Sampling(config.eval.judge.temperature, 1.0, config.eval.judge.max_new_tokens)
    finally:
        judge.close()
