"""DPO that can be checked: no dropout noise at step 1, held-out validation pairs, conservative
(CREAM) label smoothing from TRL's own losses, and the implicit reward computed as TRL computes it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from selfreward.config import DPOTrainingConfig, ModelConfig, load_config
from selfreward.errors import SelfRewardError
from selfreward.logprobs import answer_logprobs, implicit_rewards
from selfreward.models import load_model, load_tokenizer
from selfreward.records import read_jsonl, write_jsonl
from selfreward.stages.dpo import TrainDPO, conservative_losses, loss_arguments, split_pairs, validation_count
from selfreward.stages.dpo_validation import pair_outcomes, validate_dpo
from selfreward.steps import run_step
from selfreward.testing import build_tiny_model

PAIRS = [
    {
        "id": f"p{i:05d}",
        "prompt": f"Explain topic {i}.",
        "chosen": "A short and clear answer about the topic.",
        "rejected": "no " * (3 + i % 4),
    }
    for i in range(10)
]


def dpo_config(**keys):
    defaults = {
        "batch_size": 1,
        "learning_rate": 1e-3,
        "final_learning_rate": 1e-4,
        "max_length": 256,
        "eval_fraction": 0.0,
        "epochs": 1.0,
    }
    return DPOTrainingConfig(**(defaults | keys))


def train(tiny_model, tmp_path, pairs, name="dpo", reference=None, **keys):
    write_jsonl(tmp_path / f"{name}.jsonl", pairs)
    stage = tmp_path / name
    stats = run_step(
        TrainDPO(
            "dpo",
            ModelConfig(name_or_path=str(tiny_model)),
            dpo_config(**keys),
            str(tiny_model),
            reference,
            tmp_path / f"{name}.jsonl",
            stage,
            tmp_path / f"{name}-model",
            0,
        )
    )
    return stats, stage


def test_presets_train_dpo_without_dropout_but_the_paper():
    assert load_config("demo").dpo.dropout == 0.0
    assert load_config("gpu-8b-lora").dpo.dropout == 0.0
    assert load_config("paper").dpo.dropout == 0.1


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_first_step_compares_the_policy_with_itself_only_without_dropout(tiny_model, tmp_path, dropout):
    """At step 1 the policy is its reference: loss ln 2 and margin 0, unless dropout perturbs the policy's pass."""
    stats, _ = train(tiny_model, tmp_path, PAIRS[:2], dropout=dropout)
    exact = math.isclose(stats["loss_first"], round(math.log(2), 4)) and stats["reward_margins_first"] == 0.0
    assert exact is (dropout == 0.0), stats


def test_validation_pairs_are_held_out_by_seeded_ids_and_never_trained_on(tiny_model, tmp_path):
    config = dpo_config(eval_fraction=0.2, min_eval_pairs=3)
    train_pairs, held = split_pairs(PAIRS, config, seed=0)
    assert len(held) == validation_count(10, config) == 3 and len(train_pairs) == 7
    assert split_pairs(list(reversed(PAIRS)), config, seed=0)[1] == list(reversed(held))  # by id, not position
    assert {p["id"] for p in held} != {p["id"] for p in split_pairs(PAIRS, config, seed=1)[1]}
    assert (
        validation_count(3, config) == 1
        and validation_count(1, config) == 0
        and validation_count(100, dpo_config(eval_fraction=0.0)) == 0
    )
    stats, stage = train(tiny_model, tmp_path, PAIRS, eval_fraction=0.2, min_eval_pairs=3)
    assert stats["pairs"] == 7 and read_jsonl(stage / "validation_pairs.jsonl") == held
    assert {p["id"] for p in read_jsonl(stage / "train_pairs.jsonl")}.isdisjoint(p["id"] for p in held)


def test_validation_before_is_a_coin_and_after_learns_the_preference(tiny_model, tmp_path):
    """With reference M_t, every reward before training is 0 (accuracy 50%); a few steps at a high
    rate on pairs whose chosen answers share a pattern generalise to held-out pairs of the pattern."""
    thrice = [p | {"id": f"{p['id']}-{n}"} for n in range(3) for p in PAIRS]
    train(tiny_model, tmp_path, thrice, eval_fraction=0.0, learning_rate=5e-3, final_learning_rate=1e-3)
    write_jsonl(
        tmp_path / "held.jsonl", [p | {"id": f"h{i}", "prompt": f"Describe item {i}."} for i, p in enumerate(PAIRS)]
    )
    stats = validate_dpo(
        ModelConfig(name_or_path=str(tiny_model)),
        dpo_config(),
        str(tiny_model),
        str(tmp_path / "dpo-model"),
        None,
        tmp_path / "held.jsonl",
        tmp_path,
        seed=0,
    )
    assert (
        stats["pairs"] == 10
        and stats["before"]["accuracy"]["value"] == 0.5
        and stats["before"]["margin"]["value"] == 0.0
    )
    assert stats["after"]["accuracy"]["value"] == 1.0 and stats["after"]["margin"]["value"] > 0
    assert stats["change"]["accuracy"]["low"] > 0 and stats["verdict"] == "higher"
    assert (
        len(read_jsonl(tmp_path / "validation.jsonl")) == 10
        and json.loads((tmp_path / "validation.stats.json").read_text()) == stats
    )


def test_pair_outcomes_count_a_tie_as_half():
    assert pair_outcomes([1.0, 0.5, 0.2, 0.2, -1.0, 0.0]) == ([1.0, 0.5, 0.0], [0.5, 0.0, -1.0])


def test_answer_logprobs_are_the_models_own_log_softmax_of_the_answer_tokens(tiny_model):
    model = load_model(str(tiny_model), torch.float32, "cpu")
    tokenizer = load_tokenizer(str(tiny_model), 512)
    items = [("Explain tides.", "The moon pulls the sea."), ("Why?", "Because it is so, and for a long time.")]
    scored = answer_logprobs(model, tokenizer, items, batch_size=2)
    for (prompt, answer), got in zip(items, scored):
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        whole = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}], tokenize=False
        )
        ids = tokenizer(whole, add_special_tokens=False, return_tensors="pt")["input_ids"]
        start = len(tokenizer(head, add_special_tokens=False)["input_ids"])
        logps = (
            torch.log_softmax(model(ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
        )
        assert got.tokens == ids.shape[1] - start
        assert math.isclose(got.logp, float(logps[start - 1 :].sum()), rel_tol=1e-5)
    assert implicit_rewards(scored, scored, 0.1) == [0.0, 0.0]


def test_conservative_dpo_from_trls_losses_is_the_cream_loss(tmp_path):
    """TRL 1.16 dropped label smoothing from its sigmoid loss; (1+2e) sigmoid - 2e robust(1/4) gives it back.
    One pair per step against a different reference: TRL's logged loss must equal
    (1-e) softplus(-m) + e softplus(m), with m TRL's logged reward margin."""
    policy, reference = build_tiny_model(tmp_path / "policy", seed=0), build_tiny_model(tmp_path / "reference", seed=1)
    epsilon = 0.2
    stats, _ = train(
        policy,
        tmp_path,
        PAIRS[:1],
        reference=str(reference),
        label_smoothing=epsilon,
        learning_rate=1e-6,
        final_learning_rate=1e-7,
    )
    assert stats["loss_type"] == ["sigmoid", "robust"] and stats["label_smoothing"] == epsilon
    margin = stats["reward_margins_first"]
    assert abs(margin) > 0.01
    expected = (1 - epsilon) * math.log1p(math.exp(-margin)) + epsilon * math.log1p(math.exp(margin))
    assert math.isclose(stats["loss_first"], expected, abs_tol=2e-4)


def test_label_smoothing_is_checked_at_config_load():
    assert loss_arguments(DPOTrainingConfig(label_smoothing=0.1)) == conservative_losses(0.1)
    assert loss_arguments(DPOTrainingConfig(label_smoothing=0.1, rpo_alpha=1.0))["loss_weights"] == [1.2, -0.2, 1.0]
    assert loss_arguments(DPOTrainingConfig(label_smoothing="cream")) == {
        "loss_type": ["sigmoid"],
        "loss_weights": None,
    }
    for bad, message in (("0.5", "below 0.5"), ("creamy", "label_smoothing")):
        with pytest.raises(SelfRewardError, match=message):
            load_config("demo", [f"dpo.label_smoothing={bad}"])
    with pytest.raises(SelfRewardError, match=r"needs dpo\.loss_type \[sigmoid\]"):
        load_config("demo", ["dpo.loss_type=ipo", "dpo.label_smoothing=cream"])


def test_the_run_validates_each_dpo_and_shows_it(finished_run):
    run_dir, output = finished_run
    stats = json.loads((Path(run_dir) / "dpo1" / "validation.stats.json").read_text())
    assert stats["pairs"] >= 1 and stats["before"]["accuracy"]["value"] == 0.5
    held = {p["id"] for p in read_jsonl(Path(run_dir) / "dpo1" / "validation_pairs.jsonl")}
    assert held and held.isdisjoint(p["id"] for p in read_jsonl(Path(run_dir) / "dpo1" / "train_pairs.jsonl"))
    assert "DPO val acc after %" in output and "Did it learn?" in output
    assert "selfreward ifeval" in output and "selfreward eval" in output
