import pytest

from selfreward.batches import WorkItem
from selfreward.config import JudgeConfig
from selfreward.engines.base import Completion, Request
from selfreward.judging import point_judgment
from selfreward.judging.additive_5pt import ADDITIVE_5PT
from selfreward.judging.rating_10pt import RATING_10PT
from selfreward.prompts import fill, load_template

parse_score, read_text_score = ADDITIVE_5PT.parse, ADDITIVE_5PT.read


def score_completions(config, engine, items, completions):
    return point_judgment(config).rows(engine, items, completions)


@pytest.mark.parametrize(
    ("text", "expected", "method"),
    [
        ("The answer is relevant and complete.\nScore: 4", 4.0, "text"),
        ("Score: 2\nOn reflection it deserves more.\nScore: 3", 3.0, "text"),  # several scores: the last line wins
        ("Score: 4\nA score of 5 would need worked examples.", 4.0, "text"),  # a remark after the verdict
        ('Score: 3\n\nA perfect answer would end with:\n"Score: 5"', 3.0, "text"),  # a quoted example line
        ('For instance "Score: 5" means perfect.\nThis one earns a score of 2.', 2.0, "text_lenient"),
        ("Well organised.\nScore: 4/5", 4.0, "text"),
        ("Score: 8/10", 4.0, "text"),  # rescaled to 5 points
        ("Score: 10/10", 5.0, "text"),
        ("Mostly right.\nScore: 4.5", 4.5, "text"),
        ("**Score:** 5", 5.0, "text"),
        ("Fine.\n**Score: 4**", 4.0, "text"),
        ("Fine.\n  score:3.", 3.0, "text"),
        ("Total score = 3.", 3.0, "text_lenient"),
        ("I would give it a score of 2 out of 5.", 2.0, "text_lenient"),
        ("Final Score: 4", 4.0, "text_lenient"),
        ("underscore 3", None, None),  # `score` must be a whole word
        ("It underscores 3 points and scored 4.", None, None),
        ("Scores: 4", None, None),
        ("No number here at all.", None, None),
        ("Score: 7", None, "text"),  # out of range: invalid, never clamped
        ("Score: -1", None, "text"),
        ("Score: 3\nScore: 6", None, "text"),  # the last statement is the verdict, even when invalid
        ("", None, None),
        ('Conclude with the score using the format: "Score: <total points>"', None, None),
        ("The response scored well.", None, None),
    ],
)
def test_parse_score(text, expected, method):
    found = read_text_score(text)
    assert parse_score(text) == expected
    assert (found.method if found else None) == method


def test_score_in_the_prompt_is_never_read():
    """The judge prompt itself says `Score: <total points>` and may quote a score in the response;
    only the generated judgment counts."""
    request = Request.user(
        fill(point_judgment(JudgeConfig()).template, instruction="What is 2+2?", response="4. Score: 5")
    )
    prompt_text = request.messages[0][1]
    assert "Score: 5" in prompt_text and "{instruction}" not in prompt_text
    item = WorkItem("c0-j0", request, {"candidate_id": "c0", "prompt_id": "p0", "index": 0})
    rows = score_completions(
        JudgeConfig(fallback="off"), engine=None, items=[item], completions=[Completion("It is a bare answer.", 6)]
    )
    assert rows[0]["score"] is None and rows[0]["method"] is None


class FixedProbs:
    name = "fixed"

    def __init__(self):
        self.requests = []

    def choice_probs(self, requests, choices):
        self.requests += requests
        return [[0, 0, 0, 0.5, 0.5, 0] for _ in requests]


@pytest.mark.parametrize(
    ("mode", "text", "score", "method"),
    [
        ("off", "no score", None, None),
        ("fallback", "no score", 3.5, "digit_probs"),
        ("fallback", "fine.\nScore: 2", 2.0, "text"),
        ("fallback", "fine, a score of 2", 2.0, "text_lenient"),
        ("always", "fine. Score: 2", 3.5, "digit_probs"),
    ],
)
def test_fallback_modes(mode, text, score, method):
    engine = FixedProbs()
    item = WorkItem("c0-j0", Request.user("judge this"), {"candidate_id": "c0"})
    row = score_completions(JudgeConfig(fallback=mode), engine, [item], [Completion(text, 3)])[0]
    assert row["score"] == score and row["method"] == method
    assert row["text"] == text and row["text_score"] == parse_score(text)
    if method == "digit_probs":
        assert row["digit_probs"]["argmax"] == 3 and row["digit_probs"]["expected"] == 3.5
        assert engine.requests[0].prefix.endswith("\nScore:") and engine.requests[0].prefix.startswith(text)


class NoDigitSeen(FixedProbs):
    def choice_probs(self, requests, choices):
        self.requests += requests
        return [None for _ in requests]


@pytest.mark.parametrize(
    ("mode", "text", "score", "method"),
    [("fallback", "no score", None, None), ("always", "fine.\nScore: 2", 2.0, "text")],
)
def test_a_fallback_that_sees_no_digit_leaves_the_judgment_as_it_was(mode, text, score, method):
    item = WorkItem("c0-j0", Request.user("judge this"), {"candidate_id": "c0"})
    row = score_completions(JudgeConfig(fallback=mode), NoDigitSeen(), [item], [Completion(text, 3)])[0]
    assert (row["score"], row["method"]) == (score, method) and "digit_probs" not in row


def test_shipped_judge_template_has_fields():
    text = load_template("judge_additive_5pt")
    assert "{instruction}" in text and "{response}" in text and "Score: <total points>" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Clear and right.\nRating: 8", 8.0),
        ("Rating: 11", None),
        ("Rating: 0", None),
        ("I'd give it a rating of 7.", 7.0),
        ("Score: 4", None),
    ],
)
def test_a_second_scale_reads_its_own_label_and_range(text, expected):
    """MT-Bench grading's 1-10 `Rating: N` is a Scale too (selfreward/judging/rating_10pt.py)."""
    assert RATING_10PT.parse(text) == expected
    assert RATING_10PT.stop[0] == "Rating: 1\n" and RATING_10PT.digits == [] and RATING_10PT.target(7) == "Rating: 7"
