import json

import pytest

from selfreward.config import PairsConfig
from selfreward.judging.responses import response_score as candidate_score
from selfreward.records import write_jsonl
from selfreward.stages.pairs import make_pairs, margin_histogram


def _write(tmp_path, candidates, scores, unfinished=()):
    """`scores`: candidate id -> judgments, each a number (a text score), None (unparsable) or
    ("digit_probs", expectation)."""
    write_jsonl(
        tmp_path / "candidates.jsonl",
        [
            {
                "id": cid,
                "prompt_id": cid.split("-")[0],
                "prompt": "q " + cid.split("-")[0],
                "text": text,
                "finished": cid not in unfinished,
            }
            for cid, text in candidates
        ],
    )
    rows = []
    for cid, judged in scores.items():
        for k, s in enumerate(judged):
            method, score = s if isinstance(s, tuple) else ("text" if s is not None else None, s)
            rows.append({"id": f"{cid}-j{k}", "candidate_id": cid, "score": score, "method": method})
    write_jsonl(tmp_path / "judgments.jsonl", rows)


def _pairs(tmp_path):
    return [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]


def test_best_vs_worst_with_ties_unscored_and_identical(tmp_path):
    candidates = [
        ("p0-c0", "a"),
        ("p0-c1", "b"),
        ("p0-c2", "c"),
        ("p0-c3", "d"),
        ("p1-c0", "x"),
        ("p1-c1", "y"),  # tie
        ("p2-c0", "same"),
        ("p2-c1", "same"),  # identical texts
        ("p3-c0", "only"),
        ("p3-c1", "unscored"),
        ("p4-c0", "  "),
        ("p4-c1", "a real answer"),  # the judge preferred a blank answer
    ]
    scores = {
        "p0-c0": [4, 5, None],
        "p0-c1": [2, 2, 2],
        "p0-c2": [None, None, None],
        "p0-c3": [1, 3, 2],
        "p1-c0": [3, 4],
        "p1-c1": [4, 3],
        "p2-c0": [5],
        "p2-c1": [1],
        "p3-c0": [4],
        "p3-c1": [None],
        "p4-c0": [5],
        "p4-c1": [2],
    }
    _write(tmp_path, candidates, scores)
    stats = make_pairs(PairsConfig(), tmp_path)
    pairs = _pairs(tmp_path)
    assert [p["id"] for p in pairs] == ["p0"]
    pair = pairs[0]
    assert (pair["chosen"], pair["rejected"]) == ("a", "b")  # p0-c2 has no valid score: never the rejected one
    assert (pair["chosen_score"], pair["rejected_score"], pair["margin"]) == (4.5, 2.0, 2.5)
    assert (pair["chosen_judgments"], pair["rejected_judgments"]) == (2, 3)
    assert (pair["chosen_source"], pair["rejected_source"]) == ("text", "text")
    assert {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"} <= pair.keys()
    assert stats["unscored_candidates"] == 2
    assert stats["dropped"] == {"tie": 1, "identical_texts": 1, "blank_chosen": 1, "fewer_than_2_eligible": 1}
    assert stats["pair_yield"] == 0.2 and stats["tie_rate"] == 0.2
    assert stats["margin_histogram"][">2"] == 1 and sum(stats["margin_histogram"].values()) == 1
    assert stats["best_worst_margin_histogram"]["0"] == 1 and sum(stats["best_worst_margin_histogram"].values()) == 4


def test_explicit_min_margin(tmp_path):
    _write(tmp_path, [("p0-c0", "a"), ("p0-c1", "b")], {"p0-c0": [4], "p0-c1": [3.5]})
    stats = make_pairs(PairsConfig(min_margin=1.0), tmp_path)
    assert stats["pairs"] == 0 and stats["dropped"] == {"near_tie": 1}


def test_text_pairs_keep_any_nonzero_margin(tmp_path):
    """Integer text scores averaged over K: a third of a point is a real preference (the paper)."""
    _write(tmp_path, [("p0-c0", "a"), ("p0-c1", "b")], {"p0-c0": [4, 4, 5], "p0-c1": [4, 4, 4]})
    stats = make_pairs(PairsConfig(), tmp_path)
    [pair] = _pairs(tmp_path)
    assert stats["pairs"] == 1 and pair["margin"] == pair["chosen_score"] - pair["rejected_score"] == 13 / 3 - 4


def test_digit_probability_near_tie_is_dropped_with_the_exact_margin(tmp_path):
    """Two expectations that agree to three decimals were a 'pair' before the exact-margin rule."""
    _write(
        tmp_path,
        [("p0-c0", "a"), ("p0-c1", "b"), ("p1-c0", "c"), ("p1-c1", "d")],
        {
            "p0-c0": [("digit_probs", 2.58162)],
            "p0-c1": [("digit_probs", 2.58159)],
            "p1-c0": [("digit_probs", 3.1)],
            "p1-c1": [("digit_probs", 2.4)],
        },
    )
    stats = make_pairs(PairsConfig(), tmp_path)
    [pair] = _pairs(tmp_path)
    assert pair["id"] == "p1" and pair["margin"] == 3.1 - 2.4 and pair["chosen_source"] == "digit_probs"
    assert stats["dropped"] == {"near_tie": 1}
    assert stats["best_worst_margin_histogram"]["0-0.1"] == 1
    assert stats["pair_sources"] == {"digit_probs": 1}


def test_mixed_sources_use_the_digit_probability_margin(tmp_path):
    _write(
        tmp_path,
        [("p0-c0", "a"), ("p0-c1", "b"), ("p1-c0", "c"), ("p1-c1", "d")],
        {
            "p0-c0": [3],
            "p0-c1": [("digit_probs", 2.9)],  # 0.1 apart: below digit_probs_margin
            "p1-c0": [4],
            "p1-c1": [None, ("digit_probs", 2.0)],
        },
    )
    stats = make_pairs(PairsConfig(digit_probs_margin=0.25), tmp_path)
    [pair] = _pairs(tmp_path)
    assert pair["id"] == "p1" and (pair["chosen_source"], pair["rejected_source"]) == ("text", "digit_probs")
    assert stats["pair_sources"] == {"mixed": 1} and stats["dropped"] == {"near_tie": 1}


def test_text_scores_are_never_averaged_with_expectations():
    judged = [
        {"score": 5, "method": "text"},
        {"score": 2.5, "method": "digit_probs"},
        {"score": 4, "method": "text_lenient"},
    ]
    assert candidate_score(judged) == (4.5, 2, "text")
    assert candidate_score([{"score": 2.5, "method": "digit_probs"}, {"score": None, "method": None}]) == (
        2.5,
        1,
        "digit_probs",
    )
    assert candidate_score([{"score": None, "method": None}]) is None


@pytest.mark.parametrize(("require", "pair_ids", "excluded"), [(True, ["p1"], 2), (False, ["p0", "p1"], 0)])
def test_unfinished_answers_never_become_chosen_or_rejected(tmp_path, require, pair_ids, excluded):
    candidates = [("p0-c0", "cut mid"), ("p0-c1", "done"), ("p1-c0", "best"), ("p1-c1", "cut too"), ("p1-c2", "worst")]
    scores = {"p0-c0": [5], "p0-c1": [1], "p1-c0": [4], "p1-c1": [5], "p1-c2": [1]}
    _write(tmp_path, candidates, scores, unfinished={"p0-c0", "p1-c1"})
    stats = make_pairs(PairsConfig(require_finished=require), tmp_path)
    pairs = _pairs(tmp_path)
    assert [p["id"] for p in pairs] == pair_ids and stats["unfinished_candidates_excluded"] == excluded
    if require:
        assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("best", "worst")
        assert stats["dropped"] == {"fewer_than_2_eligible": 1}


def test_margin_histogram_buckets():
    hist = margin_histogram([0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.9, 1.5, 2, 3.4])
    assert hist == {"0": 1, "0-0.1": 2, "0.1-0.25": 1, "0.25-0.5": 2, "0.5-1": 1, "1-2": 2, ">2": 1}
