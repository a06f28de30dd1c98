"""dpo.loss_type, dpo.rpo_alpha and dpo.reference: checked at config load, passed to TRL as meant."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import get_args

import pytest

from selfreward.config import DPOTrainingConfig, TRLLossType, load_config
from selfreward.errors import SelfRewardError
from selfreward.stages.dpo import dpo_reference, loss_arguments


def test_the_loss_list_is_the_installed_trls():
    """TRL has no list to import: its DPOTrainingConfig documents the names and its trainer branches on them."""
    from trl import DPOConfig, DPOTrainer

    help_text = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type").metadata["help"]
    documented = set(re.findall(r"`'(\w+)'`", help_text))
    handled = set(re.findall(r'loss_type == "(\w+)"', inspect.getsource(DPOTrainer)))
    assert set(get_args(TRLLossType)) == documented == handled


@pytest.mark.parametrize("override", ["dpo.loss_type=sigmod", "dpo.loss_type=[sigmoid, ipoo]"])
def test_a_misspelt_loss_fails_at_config_load_in_one_line(override):
    with pytest.raises(SelfRewardError) as err:
        load_config("demo", [override])
    message = str(err.value)
    assert "\n" not in message and message.startswith("config error: dpo.loss_type.")
    assert "'sigmoid'" in message and "'sigmoid_norm'" in message


def test_one_loss_or_several():
    assert DPOTrainingConfig(loss_type="ipo").loss_type == ["ipo"]
    assert load_config("demo", ["dpo.loss_type=[sigmoid, bco_pair]"]).dpo.loss_type == ["sigmoid", "bco_pair"]


def test_rpo_alpha_reaches_trls_dpo_config(tmp_path):
    from trl import DPOConfig

    config = DPOTrainingConfig(loss_type=["sigmoid", "ipo"], rpo_alpha=0.5)
    args = DPOConfig(output_dir=str(tmp_path), report_to=[], bf16=False, use_cpu=True, **loss_arguments(config))
    assert (args.loss_type, args.loss_weights) == (["sigmoid", "ipo", "sft"], [1.0, 1.0, 0.5])
    plain = DPOConfig(
        output_dir=str(tmp_path), report_to=[], bf16=False, use_cpu=True, **loss_arguments(DPOTrainingConfig())
    )
    assert (plain.loss_type, plain.loss_weights) == (["sigmoid"], None)


def test_loss_weights_reach_trl_one_per_loss(tmp_path):
    from trl import DPOConfig

    config = load_config("demo", ["dpo.loss_type=[sigmoid, bco_pair, sft]", "dpo.loss_weights=[0.8, 0.2, 1.0]"]).dpo
    args = DPOConfig(output_dir=str(tmp_path), report_to=[], bf16=False, use_cpu=True, **loss_arguments(config))
    assert (args.loss_type, args.loss_weights) == (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0])
    with_rpo = loss_arguments(DPOTrainingConfig(loss_type=["sigmoid", "ipo"], loss_weights=[1.0, 0.3], rpo_alpha=0.5))
    assert with_rpo == {"loss_type": ["sigmoid", "ipo", "sft"], "loss_weights": [1.0, 0.3, 0.5]}
    with pytest.raises(
        SelfRewardError, match=r"^config error: dpo\.loss_weights: .*2 weights for 1 losses \(sigmoid\)"
    ):
        load_config("demo", ["dpo.loss_weights=[1.0, 0.5]"])


def test_rpo_alpha_with_an_sft_loss_already_listed_is_refused():
    with pytest.raises(SelfRewardError, match=r"^config error: dpo\.rpo_alpha: .*drop sft from dpo\.loss_type"):
        load_config("demo", ["dpo.loss_type=[sigmoid, sft]", "dpo.rpo_alpha=1.0"])


def test_reference_settings(tmp_path):
    models = tmp_path / "models"

    def run_model(name: str) -> Path:
        return models / name

    assert dpo_reference("previous", run_model) is None
    assert dpo_reference("initial", run_model) == dpo_reference("M1", run_model) == str(models / "M1")
    assert dpo_reference("sft", run_model) == str(models / "sft_baseline")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert dpo_reference(str(other), run_model) == str(other)
    with pytest.raises(SelfRewardError, match="model path does not exist"):
        dpo_reference(str(tmp_path / "missing"), run_model)


def test_sft_reference_needs_the_baseline():
    with pytest.raises(SelfRewardError, match=r"dpo\.reference sft needs the SFT baseline"):
        load_config("demo", ["dpo.reference=sft", "sft.baseline=false", "eft.judge=m0"])
    assert load_config("demo", ["dpo.reference=sft"]).dpo.reference == "sft"
