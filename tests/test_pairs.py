import json

from selfreward.config import PairsConfig
from selfreward.records import write_jsonl
from selfreward.stages.pairs import make_pairs


def _write(tmp_path, candidates, scores):
    write_jsonl(tmp_path / "candidates.jsonl", [
        {"id": cid, "prompt_id": cid.split("-")[0], "prompt": "q " + cid.split("-")[0], "text": text} for cid, text in candidates
    ])
    write_jsonl(tmp_path / "judgments.jsonl", [
        {"id": f"{cid}-j{k}", "candidate_id": cid, "score": s} for cid, ss in scores.items() for k, s in enumerate(ss)
    ])


def test_best_vs_worst_with_ties_unscored_and_identical(tmp_path):
    candidates = [
        ("p0-c0", "a"), ("p0-c1", "b"), ("p0-c2", "c"), ("p0-c3", "d"),
        ("p1-c0", "x"), ("p1-c1", "y"),          # tie
        ("p2-c0", "same"), ("p2-c1", "same"),    # identical texts
        ("p3-c0", "only"), ("p3-c1", "unscored"),
    ]
    scores = {
        "p0-c0": [4, 5, None], "p0-c1": [2, 2, 2], "p0-c2": [None, None, None], "p0-c3": [1, 3, 2],
        "p1-c0": [3, 4], "p1-c1": [4, 3],
        "p2-c0": [5], "p2-c1": [1],
        "p3-c0": [4], "p3-c1": [None],
    }
    _write(tmp_path, candidates, scores)
    stats = make_pairs(PairsConfig(), tmp_path)
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert [p["id"] for p in pairs] == ["p0"]
    pair = pairs[0]
    assert (pair["chosen"], pair["rejected"]) == ("a", "b")  # p0-c2 has no valid score: never the rejected one
    assert pair["chosen_score"] == 4.5 and pair["rejected_score"] == 2.0
    assert {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"} <= pair.keys()
    assert stats["unscored_candidates"] == 2
    assert stats["dropped"] == {"tie": 1, "identical_texts": 1, "fewer_than_2_scored": 1}
    assert stats["pair_yield"] == 0.25 and stats["tie_rate"] == 0.25


def test_min_margin(tmp_path):
    _write(tmp_path, [("p0-c0", "a"), ("p0-c1", "b")], {"p0-c0": [4], "p0-c1": [3.5]})
    stats = make_pairs(PairsConfig(min_margin=1.0), tmp_path)
    assert stats["pairs"] == 0 and stats["dropped"] == {"below_margin": 1}
