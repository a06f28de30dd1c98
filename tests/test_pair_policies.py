"""Pair policies on hand-made candidates: exactly which answers become chosen and rejected."""

from __future__ import annotations

import pytest

from selfreward.config import PairsConfig, load_config
from selfreward.errors import SelfRewardError
from selfreward.pair_policies import POLICIES, PromptCandidates, Scored, anchored, length_control, max_min, spin
from selfreward.records import read_jsonl, write_jsonl
from selfreward.seed_data import IFTExample
from selfreward.stages.pairs import make_pairs
from selfreward.stages.prompts import spin_prompts


def cand(cid: str, score: float | None, tokens: int | None = None, text: str | None = None) -> Scored:
    record = {"id": cid, "prompt_id": "p0", "prompt": "q", "text": text if text is not None else "x" * (tokens or 1)}
    if tokens is not None:
        record["num_tokens"] = tokens
    return Scored(record, score, 3 if score is not None else 0, "text" if score is not None else "unjudged")


def ids(pick: object) -> tuple[str, str]:
    assert isinstance(pick, tuple)
    chosen, rejected = pick
    return chosen.record["id"], rejected.record["id"]


def test_max_min_picks_best_and_worst_first_of_equals():
    scored = [cand("c0", 3.0), cand("c1", 5.0), cand("c2", 5.0), cand("c3", 1.0), cand("c4", 1.0)]
    assert ids(max_min(scored)) == ("c1", "c3")
    assert max_min([cand("c0", 4.0)]) == "fewer_than_2_eligible"


def test_length_control_shortest_near_top_longest_near_bottom():
    # max 5, min 1: rho 0.25 gives a band of 1 point: top band >= 4, bottom band <= 2
    scored = [
        cand("long_best", 5.0, tokens=90),
        cand("short_good", 4.0, tokens=20),
        cand("shortest_mid", 3.0, tokens=5),
        cand("short_bad", 2.0, tokens=10),
        cand("long_bad", 2.0, tokens=70),
        cand("worst", 1.0, tokens=40),
    ]
    assert ids(length_control(scored, 0.25)) == ("short_good", "long_bad")
    # rho 0: only the top and bottom scores take part, as max_min (lengths break nothing here)
    assert ids(length_control(scored, 0.0)) == ("long_best", "worst")


def test_length_control_rho_zero_breaks_ties_by_length():
    scored = [
        cand("a", 5.0, tokens=30),
        cand("b", 5.0, tokens=10),
        cand("c", 1.0, tokens=10),
        cand("d", 1.0, tokens=50),
    ]
    assert ids(length_control(scored, 0.0)) == ("b", "d")
    assert ids(max_min(scored)) == ("a", "c")


def test_length_control_never_chooses_a_blank_answer():
    scored = [cand("blank", 5.0, tokens=0, text=" "), cand("short", 4.8, tokens=12), cand("long_bad", 1.0, tokens=60)]
    assert ids(length_control(scored, 0.2)) == ("short", "long_bad")
    # only a blank answer in the top band: it is picked, and the shared rules drop the pair
    assert ids(length_control(scored[:1] + scored[2:], 0.2)) == ("blank", "long_bad")


def test_length_control_counts_characters_without_token_counts():
    scored = [cand("long", 5.0, text="a" * 50), cand("short", 4.5, text="a" * 5), cand("bad", 1.0, text="b")]
    assert ids(length_control(scored, 0.2)) == ("short", "bad")


def test_spin_pairs_the_human_answer_with_the_first_sample():
    samples = [cand("c0", None, text="model says"), cand("c1", None, text="other")]
    pick = spin(samples, "the human answer")
    assert isinstance(pick, tuple)
    chosen, rejected = pick
    assert chosen.record["text"] == "the human answer" and chosen.source == "human" and chosen.score is None
    assert chosen.record["id"] == "p0-human" and rejected.record["id"] == "c0"
    assert spin(samples, None) == "no_reference_answer"
    assert spin([], "answer") == "no_eligible_candidate"


def test_anchored_pairs_current_best_with_the_initial_models_worst():
    current = [cand("c0", 3.0), cand("c1", 4.5), cand("c2", 2.0)]
    anchors = (cand("m0-a", 2.5), cand("m0-b", 1.5), cand("m0-c", 4.0))
    assert ids(anchored(current, anchors)) == ("c1", "m0-b")
    assert anchored(current, ()) == "no_anchor"
    assert anchored([], anchors) == "no_eligible_candidate"


def test_registry_matches_the_config_names_and_unknown_names_fail_in_one_line():
    assert all(
        load_config("demo", [f"pairs.policy={name}"]).pairs.policy == name for name in POLICIES if name != "spin"
    )
    scored = [cand("c0", 4.0, tokens=9), cand("c1", 1.0, tokens=3)]
    assert ids(POLICIES["length_control"](PromptCandidates(scored), 0.3)) == ("c0", "c1")
    with pytest.raises(SelfRewardError) as err:
        load_config("demo", ["pairs.policy=shortest"])
    message = str(err.value)
    assert "\n" not in message and "pairs.policy" in message
    assert all(name in message for name in POLICIES)


@pytest.mark.parametrize(("rho", "expected"), [(0.3, [0.3, 0.3, 0.3]), ([0.0, 0.32, 0.4], [0.0, 0.32, 0.4, 0.4])])
def test_rho_is_one_number_or_a_schedule_whose_last_value_repeats(rho, expected):
    config = PairsConfig(rho=rho)
    assert [config.rho_at(t) for t in range(1, len(expected) + 1)] == expected
    assert PairsConfig().rho == [0.0, 0.32, 0.32, 0.4]
    with pytest.raises(SelfRewardError, match=r"^config error: pairs\.rho\.1: "):
        load_config("demo", ["pairs.rho=[0.1, 0.5]"])


def _write_stage(directory, rows):
    """rows: (candidate id, prompt id, text, tokens, text scores)."""
    write_jsonl(
        directory / "candidates.jsonl",
        [
            {"id": cid, "prompt_id": pid, "prompt": "q " + pid, "text": text, "num_tokens": tokens, "finished": True}
            for cid, pid, text, tokens, _ in rows
        ],
    )
    write_jsonl(
        directory / "judgments.jsonl",
        [
            {"id": f"{cid}-j{k}", "candidate_id": cid, "score": s, "method": "text"}
            for cid, _, _, _, scores in rows
            for k, s in enumerate(scores)
        ],
    )


def test_make_pairs_length_control_uses_the_iterations_rho_and_reports_lengths(tmp_path):
    _write_stage(
        tmp_path,
        [
            ("p0-c0", "p0", "best but long", 40, [5]),
            ("p0-c1", "p0", "good short", 8, [4]),
            ("p0-c2", "p0", "bad long", 30, [2]),
            ("p0-c3", "p0", "worst", 6, [1]),
        ],
    )
    stats = make_pairs(PairsConfig(policy="length_control", rho=[0.0, 0.25]), tmp_path, iteration=2)
    assert stats["policy"] == {"name": "length_control", "rho": 0.25}
    assert stats["length_unit"] == "tokens" and (stats["mean_chosen_length"], stats["mean_rejected_length"]) == (8, 30)
    assert stats["best_worst_margin_histogram"][">2"] == 1 and stats["mean_margin"] == 2.0


def test_make_pairs_anchored_reads_the_initial_models_judged_answers(tmp_path):
    _write_stage(
        tmp_path,
        [("p0-c0", "p0", "now good", 5, [4]), ("p0-c1", "p0", "now ok", 5, [3]), ("p1-c0", "p1", "now", 5, [2])],
    )
    with pytest.raises(
        SelfRewardError,
        match=r"anchor/candidates\.jsonl not found: pairs\.policy anchored needs the initial model's answers",
    ):
        make_pairs(PairsConfig(policy="anchored"), tmp_path)
    _write_stage(
        tmp_path / "anchor",
        [("p0-a0", "p0", "old bad", 5, [1]), ("p0-a1", "p0", "old ok", 5, [3]), ("p1-a0", "p1", "old great", 5, [4])],
    )
    stats = make_pairs(PairsConfig(policy="anchored"), tmp_path)
    [pair] = read_jsonl(tmp_path / "pairs.jsonl")
    assert (pair["chosen_id"], pair["rejected_id"], pair["margin"]) == ("p0-c0", "p0-a0", 3.0)
    assert stats["dropped"] == {"rejected_scores_higher": 1}


def test_make_pairs_spin_needs_no_judgments_and_no_margin(tmp_path):
    write_jsonl(
        tmp_path / "candidates.jsonl",
        [
            {"id": "ift000001-c0", "prompt_id": "ift000001", "prompt": "q", "text": "mine", "finished": True},
            {"id": "ift000002-c0", "prompt_id": "ift000002", "prompt": "r", "text": "Same text", "finished": True},
        ],
    )
    with pytest.raises(SelfRewardError, match="spin needs the human answers"):
        make_pairs(PairsConfig(policy="spin"), tmp_path)
    stats = make_pairs(
        PairsConfig(policy="spin"), tmp_path, reference_answers={"ift000001": "human", "ift000002": "Same text "}
    )
    assert stats["pairs"] == 1 and stats["dropped"] == {"identical_texts": 1} and stats["mean_margin"] is None
    assert stats["length_unit"] == "chars" and (stats["mean_chosen_length"], stats["mean_rejected_length"]) == (5, 4)


def test_spin_prompts_draw_ift_examples_with_their_human_answers():
    examples = [IFTExample(f"prompt {i}", f"answer {i}") for i in range(10)]
    rows = spin_prompts(examples, 4, seed=3)
    assert len(rows) == 4 and rows == spin_prompts(examples, 4, seed=3) and rows != spin_prompts(examples, 4, seed=4)
    assert all(r["reference_answer"] == r["prompt"].replace("prompt", "answer") for r in rows)
    assert len(spin_prompts(examples, 50, seed=3)) == 10
