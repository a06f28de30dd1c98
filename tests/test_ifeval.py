"""`selfreward ifeval`: lm-eval's own IFEval checkers, offline, on prompts written for these tests."""

from __future__ import annotations

import json

import pytest
from conftest import invoke

from selfreward.errors import SelfRewardError
from selfreward.eval.ifeval import accuracies, checkers, comparisons, differences, read_prompts, score, token_budget

ROWS = [
    {
        "key": 1,
        "prompt": "Describe a lake without using any commas.",
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
    },
    {
        "key": 2,
        "prompt": "Write about rain in at least 40 words.",
        "instruction_id_list": ["length_constraints:number_words"],
        "kwargs": [{"relation": "at least", "num_words": 40}],
    },
    {
        "key": 3,
        "prompt": "Repeat this request word for word, then answer it: name a color. ",
        "instruction_id_list": ["combination:repeat_prompt", "change_case:english_lowercase"],
        "kwargs": [{"prompt_to_repeat": "Repeat this request word for word, then answer it: name a color. "}, {}],
    },
    {
        "key": 4,
        "prompt": "Write two sentences about the sea.",
        "instruction_id_list": ["length_constraints:number_sentences"],
        "kwargs": [{"relation": "less than", "num_sentences": 3}],
    },
]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "ifeval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def answers(*texts):
    return [{"text": t, "finished": True, "num_tokens": len(t.split())} for t in texts]


def test_lm_evals_checkers_score_offline_and_never_download(monkeypatch):
    import nltk

    monkeypatch.setattr(nltk, "download", lambda *a, **k: pytest.fail("nltk tried to download"))
    utils = checkers()
    assert utils.__name__ == "lm_eval.tasks.ifeval.utils"
    from lm_eval.tasks.ifeval import instructions_util

    assert instructions_util.count_sentences("Dr. Smith went home. He was tired! Was he?") == 3


def test_each_verdict_is_lm_evals(prompts_file):
    rows, _ = read_prompts(str(prompts_file))
    good = answers(
        "A calm lake lies under the hills and the water is still",
        " ".join(["rain"] * 45),
        "repeat this request word for word, then answer it: name a color. blue",  # lm-eval compares the repeat case-blind
        "The sea is wide. It is deep. It is blue.",  # three sentences: not "less than 3"
    )
    bad = answers("A lake, calm and still.", "Rain falls.", "Blue.", "One. Two. Three. Four.")
    scored_good, scored_bad = score(rows, good), score(rows, bad)
    assert [s["prompt_strict"] for s in scored_good] == [True, True, True, False]
    assert scored_good[2]["inst_strict"] == [True, True] and scored_good[3]["inst_loose"] == [False]
    assert [s["prompt_strict"] for s in scored_bad] == [False, False, False, False]
    figures = accuracies(scored_good)
    assert figures["prompt_strict"]["value"] == 0.75 and figures["inst_strict"]["value"] == 0.8
    assert (
        figures["prompt_strict"]["n"] == 4
        and figures["prompt_strict"]["low"] <= 0.75 <= figures["prompt_strict"]["high"]
    )
    change = differences(scored_good, scored_bad)
    assert change["prompt_strict"]["value"] == 0.75 and change["inst_strict"]["value"] == 0.8


def test_a_checker_that_draws_a_random_argument_gives_one_verdict(tmp_path):
    """lm-eval's letter_frequency draws a random letter when the row's is not one (google's row 1122: '#')."""
    import random

    row = {
        "key": 7,
        "prompt": "Write a tweet with at least 4 hashtags.",
        "instruction_id_list": ["keywords:letter_frequency"],
        "kwargs": [{"let_relation": "at least", "letter": "#", "let_frequency": 4}],
    }
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(row) + "\n")
    rows, _ = read_prompts(str(path))
    half_the_letters = answers(" ".join(["abcdefghijklm"] * 4))  # 13 of 26 letters 4 times each
    verdicts = set()
    for other_state in range(30):
        random.seed(other_state)
        verdicts.add(score(rows, half_the_letters)[0]["prompt_strict"])
    assert len(verdicts) == 1
    random.seed(5)
    before = random.random()
    random.seed(5)
    score(rows, half_the_letters)
    assert random.random() == before  # the caller's random state is left as it was


def test_a_prompt_that_ends_in_whitespace_keeps_it(prompts_file):
    rows, _ = read_prompts(str(prompts_file))
    assert rows[2]["prompt"].endswith("color. ") and rows[2]["id"] == "k3"
    exact = answers("", "", "Repeat this request word for word, then answer it: name a color. Blue.", "")
    assert score(rows, exact)[2]["inst_strict"] == [True, False]


def test_token_budget_makes_room_for_length_constraints():
    assert token_budget(ROWS[0], 512, 1280) == 512
    assert (
        token_budget({"kwargs": [{"relation": "at least", "num_words": 600}]}, 512, 1280) == 1024
    )  # 964 rounded up to 256s
    assert token_budget({"kwargs": [{"num_paragraphs": 5}]}, 512, 1280) == 768
    assert token_budget({"kwargs": [{"relation": "at least", "num_words": 1200}]}, 512, 1280) == 1280
    assert token_budget(ROWS[3], 512, 1280) == 512  # "less than" needs no room


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"key": 1, "prompt": "x", "instruction_id_list": ["no:such"], "kwargs": [{}]}',
            "unknown instruction 'no:such'",
        ),
        (
            '{"key": 1, "prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []}',
            "one per instruction",
        ),
        ('{"prompt": "x"}', "key"),
        ("not json", "line 1: not valid JSON"),
    ],
)
def test_a_malformed_row_stops_with_one_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(SelfRewardError, match=message) as err:
        read_prompts(str(path))
    assert "\n" not in str(err.value)


def test_headline_comparisons():
    assert comparisons(["M0", "sft_baseline", "M1", "M2", "M3"]) == [
        ("M1", "M0"),
        ("sft_baseline", "M0"),
        ("M2", "M1"),
        ("M3", "M1"),
        ("M3", "M2"),
    ]
    assert comparisons(["M1"]) == []


def test_ifeval_command_on_a_run(finished_run, prompts_file):
    run_dir, _ = finished_run
    result = invoke(
        "ifeval",
        run_dir,
        "--prompts",
        prompts_file,
        "--with-seed",
        "--model",
        "M1",
        "--set",
        "eval.ifeval.max_new_tokens=8",
        "--set",
        "eval.ifeval.max_new_tokens_limit=16",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "eval" / "ifeval" / "summary.json").read_text())
    assert set(summary["models"]) == {"M0", "M1"} and summary["prompts"] == 4
    assert [(d["model"], d["baseline"]) for d in summary["differences"]] == [("M1", "M0")]
    assert "M1 - M0" in result.output and "IFEval on 4 prompts" in result.output
    assert json.loads((run_dir / "eval" / "summary.json").read_text())["ifeval"]["prompts"] == 4
    again = invoke(
        "ifeval", run_dir, "--prompts", prompts_file, "--model", "M1", "--set", "eval.ifeval.max_new_tokens=9"
    )
    assert again.exit_code == 2 and "add --fresh" in again.output
    report = invoke("report", run_dir)
    assert report.exit_code == 0, report.output
    page = (run_dir / "report.md").read_text()
    assert page.index("Did it learn?") < page.index("Before the loop") and "IFEval prompt strict % (4 prompts)" in page
    m1_row = next(line for line in page.splitlines() if line.startswith("| M1 |"))
    assert " vs M0: " in m1_row  # M1's IFEval change is from the seed model
