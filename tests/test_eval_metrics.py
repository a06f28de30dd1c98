"""Reward-model metrics and head-to-head logic on hand-computed cases."""

import pytest

from selfreward.eval.rm import rm_metrics
from selfreward.judging.pairwise import outcome, parse_verdict, tally


def test_perfect_and_reversed_groups_of_3():
    perfect = rm_metrics([([0, 1, 2], [5.0, 3.0, 1.0])])
    assert perfect["pairwise_accuracy"] == 1.0 and perfect["exact_match"] == 1.0
    assert perfect["spearman"] == 1.0 and perfect["kendall_tau"] == 1.0
    assert perfect["five_best"] == 1.0 and perfect["scored_five"] == 1
    reversed_ = rm_metrics([([0, 1, 2], [1.0, 3.0, 5.0])])
    assert reversed_["pairwise_accuracy"] == 0.0 and reversed_["exact_match"] == 0.0
    assert reversed_["spearman"] == -1.0 and reversed_["kendall_tau"] == -1.0
    assert reversed_["five_best"] == 0.0


def test_ties_count_half_and_break_exact_match():
    # group of 2 tied by the model; group of 4 with one model tie and one wrong pair
    metrics = rm_metrics(
        [
            ([0, 1], [3.0, 3.0]),
            ([0, 1, 2, 3], [4.0, 4.0, 2.0, 3.0]),
        ]
    )
    # pairs: g1: 1 tie (0.5). g2: (0,1) tie 0.5, (0,2) ok, (0,3) ok, (1,2) ok, (1,3) ok, (2,3) wrong -> 4.5 of 6
    assert metrics["pairs"] == 7
    assert metrics["pairwise_accuracy"] == pytest.approx(5 / 7, abs=1e-4)
    assert metrics["tie_rate"] == pytest.approx(2 / 7, abs=1e-4)
    assert metrics["exact_match"] == 0.0
    assert metrics["five_best"] is None and metrics["scored_five"] == 0
    # g1 is constant -> undefined (0); g2: spearman of (4,4,2,3) vs (0,-1,-2,-3)
    assert metrics["undefined_correlation_groups"] == 1
    # ranks of x: 3.5 3.5 1 2 vs 4 3 2 1: rho = 3.5 / sqrt(4.5 * 5); tau-b = (4 - 1) / sqrt(5 * 6)
    assert metrics["spearman"] == pytest.approx((0 + 0.7379) / 2, abs=1e-3)
    assert metrics["kendall_tau"] == pytest.approx((0 + 0.5477) / 2, abs=1e-3)


def test_missing_scores_and_human_ties():
    metrics = rm_metrics([([0, 1, 1], [None, 2.0, 1.0]), ([0, 1], [4.6, 1.0])])
    # g1: human-tied pair (1,2) is not counted; (0,1) and (0,2) involve a missing score -> ties
    assert metrics["pairs"] == 3
    assert metrics["pairwise_accuracy"] == pytest.approx((0.5 + 0.5 + 1) / 3, abs=1e-4)
    assert metrics["exact_match"] == 0.5
    assert metrics["five_best"] == 1.0  # 4.6 counts as a 5


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("A is more complete.\nVerdict: A", "A"),
        ("Verdict: B", "B"),
        ("Both fine. Verdict: tie", "tie"),
        ("**Verdict:** [B]", "B"),
        ("First I thought Verdict: A but no. Verdict: B", "B"),
        ("I prefer answer A.", None),
        ("", None),
    ],
)
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


def test_order_swap_disagreement_is_a_tie():
    assert outcome("A", "B") == "win"  # X first and preferred, X second and preferred
    assert outcome("B", "A") == "lose"
    assert outcome("A", "A") == "tie"  # position bias: the judge always picks the first answer
    assert outcome("A", None) == "tie"
    assert outcome("tie", "B") == "tie"
    records = [
        {"prompt_id": "p0", "order": "xy", "verdict": "A"},
        {"prompt_id": "p0", "order": "yx", "verdict": "B"},
        {"prompt_id": "p1", "order": "xy", "verdict": "A"},
        {"prompt_id": "p1", "order": "yx", "verdict": "A"},
        {"prompt_id": "p2", "order": "xy", "verdict": "B"},
        {"prompt_id": "p2", "order": "yx", "verdict": "A"},
        {"prompt_id": "p3", "order": "xy", "verdict": None},
        {"prompt_id": "p3", "order": "yx", "verdict": "B"},
    ]
    stats = tally(records)
    assert (stats["win"], stats["tie"], stats["lose"]) == (25.0, 50.0, 25.0)
    assert stats["win_rate"] == 50.0 and stats["unparsable_verdicts"] == 1 and stats["order_disagreements"] == 1
