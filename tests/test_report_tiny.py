"""The report on a copy of the finished tiny run: every evaluated model kept across `eval` calls,
per-iteration answer lengths and judge saturation, examples, meta-judge stats, "no data yet"."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import invoke

from selfreward.records import read_jsonl, write_json

SMALL = [
    "--set",
    "eval.rm_samples=1",
    "--set",
    "eval.max_prompts=2",
    "--set",
    "eval.answer_max_new_tokens=8",
    "--set",
    "eval.judge.max_new_tokens=8",
]


@pytest.fixture(scope="module")
def evaluated_twice(finished_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("twice") / "run"
    shutil.copytree(finished_run[0], run_dir, ignore=shutil.ignore_patterns("eval", "report.*"))
    first = invoke("eval", run_dir, "--model", "sft_baseline", "--with-seed", *SMALL)
    assert first.exit_code == 0, first.output
    second = invoke("eval", run_dir, "--model", "M1", *SMALL)
    assert second.exit_code == 0, second.output
    return run_dir


def test_a_second_eval_keeps_the_models_evaluated_before(evaluated_twice):
    summary = json.loads((evaluated_twice / "eval" / "summary.json").read_text())
    assert list(summary["rm"]) == list(summary["answers"]) == ["sft_baseline", "M0", "M1"]
    assert [(h["model"], h["opponent"]) for h in summary["head_to_head"]] == [
        ("M1", "sft_baseline")
    ]  # sft_baseline's answers from the first call


def report_text(run_dir) -> tuple[str, str]:
    result = invoke("report", run_dir)
    assert result.exit_code == 0, result.output
    return (run_dir / "report.html").read_text(), (run_dir / "report.md").read_text()


def md_rows(markdown: str, title: str) -> list[list[str]]:
    block = markdown.split(f"## {title}\n\n")[1].split("\n\n")[0].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in block[2:]]


def test_report_shows_every_model_and_per_iteration_lengths(evaluated_twice):
    page, markdown = report_text(evaluated_twice)
    assert [row[0] for row in md_rows(markdown, "Reward modelling on eft-eval")] == ["sft_baseline", "M0", "M1"]
    assert "Reward-model metrics per model on eft-eval" in page and [
        row[:2] for row in md_rows(markdown, "Head-to-head (both orders, disagreement = tie)")
    ] == [["M1", "sft_baseline"]]
    lengths = md_rows(markdown, "Answer length and judge saturation")
    for t, row in zip((1, 2), lengths):
        candidates = {c["id"]: c["num_tokens"] for c in read_jsonl(evaluated_twice / f"iter{t}" / "candidates.jsonl")}
        pairs = read_jsonl(evaluated_twice / f"iter{t}" / "pairs.jsonl")
        chosen = round(sum(candidates[p["chosen_id"]] for p in pairs) / len(pairs), 3)
        histogram = json.loads((evaluated_twice / f"iter{t}" / "judgments.stats.json").read_text())["score_histogram"]
        assert row[:3] == [str(t), "max_min", f"{chosen:g}"]
        assert row[6] == f"{round(histogram['5'] / sum(histogram.values()), 3):g}"
    examples = md_rows(markdown, "Chosen and rejected examples")
    first = read_jsonl(evaluated_twice / "iter1" / "pairs.jsonl")[0]
    assert examples[0][0] == "1" and examples[0][2].startswith(
        first["chosen"][:20].replace("\n", " ").replace("|", "\\|").strip()
    )


def test_report_says_no_data_yet_and_shows_meta_stats(evaluated_twice, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated_twice, run_dir)
    (run_dir / "iter3").mkdir()  # an iteration that has not produced anything yet
    write_json(
        run_dir / "iter1" / "meta.stats.json",
        {
            "stage": "meta",
            "prompts_meta_judged": 2,
            "comparisons": 6,
            "order_agreement": 0.667,
            "first_position_win_rate": 0.75,
            "unparsable_verdicts": 1,
            "judge_pairs": 1,
            "judge_pair_share": 0.25,
        },
    )
    page, markdown = report_text(run_dir)
    assert "Judge score histogram per iteration (judgments per rounded score); no data yet for AIFT(M3)" in page
    assert md_rows(markdown, "Meta-judge (wins minus losses; disagreement between orders = tie)")[0][:8] == [
        "1",
        "2",
        "6",
        "0.667",
        "0.75",
        "1",
        "1",
        "0.25",
    ]
    assert md_rows(markdown, "Answer length and judge saturation")[2] == ["3", "-", "-", "-", "-", "-", "-", "-"]
