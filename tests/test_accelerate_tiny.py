"""Training under `accelerate launch`: the tiny loop with SFT and DPO in 2 CPU worker processes
(gloo, the shipped `ddp` config), one-line failures, and the config keys' errors."""

from __future__ import annotations

import json

import pytest
from conftest import invoke

from selfreward.config import ModelConfig, SFTTrainingConfig, load_config
from selfreward.errors import SelfRewardError
from selfreward.stages.sft import TrainSFT
from selfreward.steps import run_step

pytest.importorskip("accelerate")

TWO_WORKERS = [
    f"{section}.{key}={value}"
    for section in ("sft", "dpo")
    for key, value in (("accelerate_config", "ddp"), ("num_processes", 2))
]


@pytest.fixture(scope="module")
def ddp_run(loop_config, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    # A gentler SFT than the tiny config's keeps M1's answers varied enough to form pairs.
    sets = [*TWO_WORKERS, "sft.save_steps=5", "sft.learning_rate=1e-5", "sft.final_learning_rate=1e-6"]
    result = invoke("run", loop_config, "--out", run_dir, *[arg for s in sets for arg in ("--set", s)])
    assert result.exit_code == 0, result.output
    return run_dir


def test_two_worker_loop_trains_every_stage_in_two_processes(ddp_run):
    summary = json.loads((ddp_run / "summary.json").read_text())
    assert summary["models"] == ["M1", "M2", "M3", "sft_baseline"]
    assert all(it["pairs"] > 0 and it["dpo_loss"] is not None for it in summary["iterations"])
    for stage in ("sft_baseline", "sft", "dpo1", "dpo2"):
        assert "--num_processes 2 -m selfreward.launch" in (ddp_run / stage / "launch.log").read_text()
    for stage in ("sft_baseline", "sft"):
        stats = json.loads((ddp_run / stage / "sft.stats.json").read_text())
        assert stats["steps"] == -(-stats["examples"] // 4)  # batch 4 = 2 processes x 1 x accumulation 2
        # each worker process saves its own RNG state in a Trainer checkpoint
        assert sorted(p.name for p in (ddp_run / stage / "trainer" / "checkpoint-5").glob("rng_state*")) == [
            "rng_state_0.pth",
            "rng_state_1.pth",
        ]


def test_two_worker_checkpoints_load_and_generate(ddp_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("sft_baseline", "M1", "M2", "M3"):
        path = ddp_run / "models" / name
        model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Explain tides."}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]


def test_a_worker_error_is_one_line_naming_the_log(tiny_model, tmp_path):
    config = SFTTrainingConfig(accelerate_config="ddp", num_processes=2, batch_size=2, max_length=17)
    with pytest.raises(SelfRewardError) as caught:
        run_step(
            TrainSFT(
                "sft",
                ModelConfig(name_or_path=str(tiny_model)),
                config,
                str(tiny_model),
                [("Explain tides.", "The moon pulls the sea.")],
                tmp_path / "sft",
                tmp_path / "model",
                0,
            )
        )
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        "[sft] training in worker processes failed: none of the 1 training examples"
    )
    assert message.endswith(f"(log: {tmp_path / 'sft' / 'launch.log'})") and not (tmp_path / "model").exists()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (
            ["sft.accelerate_config=nope"],
            r"sft\.accelerate_config: .*no accelerate config 'nope' \(shipped: ddp, deepspeed_zero3, deepspeed_zero3_offload, fsdp",
        ),
        (["dpo.num_processes=2"], r"dpo: .*num_processes needs accelerate_config"),
        (
            ["sft.accelerate_config=ddp", "sft.num_processes=3"],
            r"sft: .*batch_size must be a multiple of micro_batch_size x num_processes \(1 x 3\)",
        ),
    ],
)
def test_accelerate_config_errors_name_the_key(loop_config, overrides, error):
    with pytest.raises(SelfRewardError, match=r"^config error: " + error):
        load_config(str(loop_config), overrides)


def test_deepspeed_without_deepspeed_stops_before_launching(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr("selfreward.training.find_spec", lambda name: None)
    config = SFTTrainingConfig(
        accelerate_config="deepspeed_zero3"
    )  # valid as a config: presets validate on machines without DeepSpeed
    with pytest.raises(
        SelfRewardError, match=r"^sft\.accelerate_config=deepspeed_zero3 needs DeepSpeed: pip install deepspeed$"
    ):
        run_step(
            TrainSFT(
                "sft",
                ModelConfig(name_or_path=str(tiny_model)),
                config,
                str(tiny_model),
                [("Explain tides.", "The moon.")],
                tmp_path / "sft",
                tmp_path / "model",
                0,
            )
        )
    assert not (tmp_path / "sft" / "launch.log").exists()


def test_a_yaml_that_is_not_an_accelerate_config(loop_config, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("learning_rate: 1\n")
    with pytest.raises(
        SelfRewardError,
        match=r"^config error: sft\.accelerate_config: .*is not an accelerate config \(no distributed_type\)",
    ):
        load_config(str(loop_config), [f"sft.accelerate_config={other}"])


def test_training_in_a_child_process_hands_all_its_memory_back(tiny_model, tmp_path):
    """`train.child_process` (auto with the vLLM engine): the step trains in `python -m selfreward.launch`,
    a process of its own whose exit returns every byte it held; the same weights as training here."""
    import os

    from selfreward.config import load_config
    from selfreward.training import child_process

    config = SFTTrainingConfig(batch_size=2, max_length=256, learning_rate=1e-4, final_learning_rate=1e-5)
    examples = [("Explain tides.", "The moon pulls the sea."), ("Name a color.", "Blue.")]

    def train(name, child):
        step = TrainSFT(
            name,
            ModelConfig(name_or_path=str(tiny_model)),
            config,
            str(tiny_model),
            examples,
            tmp_path / name,
            tmp_path / f"{name}-model",
            0,
            child,
        )
        return run_step(step)

    here, there = train("here", False), train("child", True)
    assert here["pid"] == os.getpid() and there["pid"] != os.getpid()
    assert (tmp_path / "child" / "launch.json").exists() and "selfreward.launch" in (
        tmp_path / "child" / "launch.log"
    ).read_text()
    assert (here["loss_first"], here["loss_last"]) == (there["loss_first"], there["loss_last"])
    assert child_process(load_config("demo", ["engine.kind=vllm"]).sft, "vllm") and not child_process(
        load_config("demo").sft, "hf"
    )
    assert child_process(load_config("demo", ["sft.child_process=true"]).sft, "hf")
