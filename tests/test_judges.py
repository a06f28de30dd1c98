"""Judges a small model can be: the implicit-reward judge (DICE) and CREAM's consistency-set label smoothing."""

from __future__ import annotations

import io
import json
import math

import pytest
from conftest import TINY_AIFT
from rich.console import Console

from selfreward.config import ModelConfig, load_config
from selfreward.errors import SelfRewardError
from selfreward.logprobs import score_with_model
from selfreward.recipes.aift import run_aift
from selfreward.records import read_jsonl
from selfreward.stages.consistency import consistency_stats, prompt_taus
from selfreward.steps import Lineage
from selfreward.testing import build_tiny_model

TOPICS = ["bread", "tides", "rainbows", "sleep", "tea", "clouds"]


@pytest.fixture
def ift_file(tmp_path):
    path = tmp_path / "ift.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"Explain {t} in a few sentences.", "response": f"The human answer about {t}."})
            + "\n"
            for t in TOPICS
        )
    )
    return path


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("other"), seed=1)


def config_for(model, ift_file, *extra):
    return load_config(
        "demo",
        [
            f"model.name_or_path={model}",
            f"data.ift=[{ift_file}]",
            *TINY_AIFT,
            *extra,
        ],
    )


def quiet() -> Console:
    return Console(file=io.StringIO())


def test_implicit_judge_scores_each_answer_by_its_log_ratio(tiny_model, other_model, ift_file, tmp_path):
    out = tmp_path / "it"
    config = config_for(tiny_model, ift_file, "judge.kind=implicit", "judge.beta=0.5", "judge.per_token=true")
    stats = run_aift(config, out, console=quiet(), lineage=Lineage(trained_from=str(other_model)))
    candidates = read_jsonl(out / "candidates.jsonl")
    judgments = read_jsonl(out / "judgments.jsonl")
    assert stats["judge"]["kind"] == "implicit" and len(judgments) == len(candidates) == stats["judge"]["judgments"]
    items = [(c["prompt"], c["text"]) for c in candidates]
    policy = score_with_model(ModelConfig(name_or_path=str(tiny_model)), str(tiny_model), items, 2048)
    reference = score_with_model(ModelConfig(name_or_path=str(tiny_model)), str(other_model), items, 2048)
    for judgment, p, r in zip(judgments, policy, reference):
        assert judgment["method"] == "implicit" and judgment["text"] == "" and judgment["answer_tokens"] == p.tokens
        assert math.isclose(judgment["score"], 0.5 * (p.logp - r.logp) / p.tokens, abs_tol=1e-5)
    pairs = read_jsonl(out / "pairs.jsonl")
    by_candidate = {j["candidate_id"]: j["score"] for j in judgments}
    assert len(pairs) + sum(stats["pairs"]["dropped"].values()) == stats["pairs"]["prompts"] == 3
    for pair in pairs:  # the best and worst reward among the prompt's finished, non-blank answers
        own = [
            by_candidate[c["id"]]
            for c in candidates
            if c["prompt_id"] == pair["id"] and c["finished"] and c["text"].strip()
        ]
        assert (
            pair["chosen_source"] == "implicit"
            and pair["chosen_score"] == max(own)
            and pair["rejected_score"] == min(own)
        )


def test_implicit_judge_against_itself_ties_everything(tiny_model, ift_file, tmp_path):
    out = tmp_path / "it"
    stats = run_aift(
        config_for(tiny_model, ift_file, "judge.kind=implicit", f"judge.reference={tiny_model}"), out, console=quiet()
    )
    assert (
        stats["judge"]["score_sd"] == 0.0
        and stats["pairs"]["pairs"] == 0
        and stats["pairs"]["dropped"].get("tie", 0) > 0
    )


def test_implicit_judge_alone_needs_a_reference(tiny_model, ift_file, tmp_path):
    with pytest.raises(SelfRewardError, match=r"judge\.kind implicit needs judge\.reference"):
        run_aift(config_for(tiny_model, ift_file, "judge.kind=implicit"), tmp_path / "it", console=quiet())
    with pytest.raises(SelfRewardError, match=r"meta\.enabled compares written judgments"):
        load_config("demo", ["judge.kind=implicit", "meta.enabled=true"])


def test_kendall_agreement_per_prompt():
    current = {
        "p1": {"a": 3.0, "b": 2.0, "c": 1.0},
        "p2": {"a": 1.0, "b": 2.0},
        "p3": {"a": 4.0, "b": 4.0},
        "p4": {"a": 1.0},
    }
    previous = {"p1": {"a": 5.0, "b": 4.0, "c": 0.0}, "p2": {"a": 3.0, "b": 1.0}, "p3": {"a": 1.0, "b": 2.0}}
    taus, undefined = prompt_taus(current, previous)
    assert taus == [1.0, -1.0] and undefined == 2  # p3: one judge is constant; p4: one candidate


def test_cream_consistency_sets_the_iterations_label_smoothing(tiny_model, other_model, ift_file, tmp_path):
    out = tmp_path / "it"
    config = config_for(tiny_model, ift_file, "dpo.label_smoothing=cream")
    stats = run_aift(config, out, console=quiet(), lineage=Lineage(previous=str(other_model)))
    found = stats["consistency"]
    assert list(stats) == ["prompts", "candidates", "judge", "consistency", "pairs"]
    assert found["previous_model"] == str(other_model) and found["prompts_compared"] + found["prompts_undefined"] == 3
    previous = read_jsonl(out / "previous" / "judgments.jsonl")
    assert len(previous) == len(read_jsonl(out / "judgments.jsonl")) and read_jsonl(
        out / "previous" / "candidates.jsonl"
    ) == read_jsonl(out / "candidates.jsonl")
    if found["tau_mean"] is not None:
        assert found["label_smoothing"] == round(min(0.49, max(0.0, (1 - found["tau_mean"]) / 2)), 4)
    none = consistency_stats(out, None, None)
    assert none["label_smoothing"] == 0.0 and "no previous judge" in none["note"]


def test_cream_in_the_loop_trains_with_the_measured_smoothing(loop_config, tmp_path):
    from conftest import invoke

    run_dir = tmp_path / "run"
    result = invoke(
        "run", loop_config, "--out", run_dir, "--set", "dpo.label_smoothing=cream", "--set", "loop.iterations=1"
    )
    assert result.exit_code == 0, result.output
    smoothing = json.loads((run_dir / "iter1" / "consistency.stats.json").read_text())["label_smoothing"]
    dpo = json.loads((run_dir / "dpo1" / "dpo.stats.json").read_text())
    assert dpo["label_smoothing"] == smoothing
    assert dpo["loss_type"] == (["sigmoid", "robust"] if smoothing > 0 else ["sigmoid"])
    assert (run_dir / "models" / "M2" / "config.json").exists()
