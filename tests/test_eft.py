"""EFT data: agreement with human rankings, targets from human labels, hint-free rationalized examples."""

import random

import pytest

from selfreward.config import EFTConfig, JudgeConfig
from selfreward.engines.base import Completion, Engine
from selfreward.records import read_jsonl
from selfreward.seed_data import RankedGroup, RankedResponse
from selfreward.stages.eft import (
    HINT,
    agreeing_choice,
    agrees_with_ranking,
    build_eft,
    clean_justification,
    downsample_top_score,
    target_scores,
)


def test_agreement_is_strict_and_ignores_human_ties():
    assert agrees_with_ranking([0, 1, 2], [5, 3, 1])
    assert not agrees_with_ranking([0, 1, 2], [5, 3, 3])  # a score tie disagrees
    assert not agrees_with_ranking([0, 1], [4, None])  # a missing score disagrees
    assert agrees_with_ranking([0, 1, 1], [5, 2, 3])  # human tie: any order
    assert not agrees_with_ranking([0, 1, 1], [5, 2, 5])


def test_agreeing_choice_searches_the_samples():
    # response 0 samples 3, 5; response 1 samples 4, 2; response 2 samples None, 1
    samples = [[3, 5], [4, 2], [None, 1]]
    assert agreeing_choice([0, 1, 2], samples) == [0, 1, 1]  # 3 > 2 > 1 is the first agreeing combination
    assert agreeing_choice([0, 1, 2], [[1, 2], [4, 5], [0, 0]]) is None
    assert agreeing_choice([0, 1], [[None], [2]]) is None


@pytest.mark.parametrize(
    ("ranks", "qualities", "expected"),
    [
        ([0, 1, 2], [0.9, 0.5, 0.1], [5, 3, 1]),  # 1 + 4q: 4.6 -> 5, 3.0 -> 3, 1.4 -> 1
        ([0, 1, 2], [0.75, 0.68, 0.6], [4, 3, 2]),  # 4, 3.72 -> 4 -> lowered to 3, 3.4 -> 3 -> 2
        ([0, 1, 2], [0.7, None, 0.1], [4, 3, 1]),  # a missing label: rank position for the group
        ([0, 1], [None, None], [4, 1]),
        ([0, 1, 2, 3], [None] * 4, [4, 3, 2, 1]),  # 4 - 3p/3: 4, 3, 2, 1
        ([0, 1, 1], [None] * 3, [4, 1, 1]),  # human ties keep equal targets
        ([0, 1, 2, 3, 4, 5, 6], [0.2] * 7, None),  # cannot stay strictly ordered above 0
        ([0, 0], [0.5, 0.5], [3, 3]),
    ],
)
def test_target_scores(ranks, qualities, expected):
    targets = target_scores(ranks, qualities)
    assert targets == expected
    if targets is not None:
        assert agrees_with_ranking(ranks, targets)


def test_clean_justification_drops_scores_hints_and_long_tails():
    text = "The reviewer already settled on 4. The answer is correct and clear. Score: 4\nMore text."
    assert clean_justification(text) == "The answer is correct and clear."
    long = " ".join(["word"] * 150) + ". Score: 3"
    assert len(clean_justification(long).split()) == 100


def test_downsample_top_score():
    examples = [{"score": 4}] * 6 + [{"score": 2}] * 2 + [{"score": 5}]
    kept = downsample_top_score([dict(e) for e in examples], random.Random(0))
    assert sorted(round(e["score"]) for e in kept) == [2, 2, 4, 4, 5]


class HintEcho(Engine):
    """Writes a justification that quotes the hint and a wrong score, like a careless small model."""

    name = "echo"

    def generate(self, requests, sampling, seed):
        out = []
        for request in requests:
            prompt = request.messages[-1][1]
            assert "A careful reviewer has already settled" in prompt
            out.append(
                Completion(
                    "As the reviewer already settled, this is the score. The response covers the main point well. Score: 1",
                    20,
                )
            )
        return out


def test_rationalized_examples_never_contain_the_hint(tmp_path):
    groups = [
        RankedGroup(
            "a",
            "How do plants drink?",
            (RankedResponse("Through roots and xylem.", 0, 0.9), RankedResponse("Water.", 1, 0.3)),
        ),
        RankedGroup(
            "b",
            "Name a prime number.",
            (RankedResponse("7 is prime.", 0), RankedResponse("8", 1), RankedResponse("banana", 2)),
        ),
    ]
    stats = build_eft(
        EFTConfig(strategy="rationalize", eval_fraction=0.0, downsample=False),
        JudgeConfig(),
        HintEcho(),
        groups,
        set(),
        tmp_path,
        0,
        4,
    )
    examples = read_jsonl(tmp_path / "train.jsonl")
    assert stats["train_groups_kept"] == 2 and len(examples) == 5
    hint_start = HINT.split("{score}")[0].strip()
    assert [e["score"] for e in examples] == [5, 2, 4, 3, 1]
    for example in examples:
        assert hint_start not in example["prompt"] and hint_start not in example["completion"]
        assert "reviewer" not in example["completion"]
        assert example["completion"].endswith(f"Score: {example['score']}")
        assert example["completion"].count("Score:") == 1


def test_excluded_prompts_never_train(tmp_path):
    groups = [
        RankedGroup(str(i), f"Question {i}?", (RankedResponse("good", 0), RankedResponse("bad", 1))) for i in range(4)
    ]
    stats = build_eft(
        EFTConfig(strategy="rationalize", eval_fraction=0.0),
        JudgeConfig(),
        HintEcho(),
        groups,
        {"question 2?"},
        tmp_path,
        0,
        4,
    )
    assert stats["excluded_groups"] == 1 and stats["train_groups_tried"] == 3
    assert not any("Question 2?" in e["prompt"] for e in read_jsonl(tmp_path / "train.jsonl"))
