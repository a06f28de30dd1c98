"""LoRA through PEFT on the tiny Llama: the loop with adapters, merged checkpoints, resume, and the
precision and quantization settings (4-bit itself needs a GPU: here only its errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import invoke

from selfreward.config import DPOTrainingConfig, LoRAConfig, ModelConfig, SFTTrainingConfig, load_config
from selfreward.errors import SelfRewardError
from selfreward.stages.sft import TrainSFT
from selfreward.steps import run_step
from selfreward.training import load_for_training, weights_dtype

LORA = "{r: 4, alpha: 8, dropout: 0.0, target_modules: all-linear}"
EXAMPLES = [
    ("Explain tides.", "The moon pulls the sea."),
    ("List two colors.", "Red and blue."),
    ("Describe a cat.", "A small furry animal."),
    ("Write a word.", "Hello."),
]


def weights(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


@pytest.fixture(scope="module")
def lora_run(loop_config, tmp_path_factory):
    """One iteration with LoRA for SFT and DPO; DPO without dropout so its first step compares the
    policy with its reference exactly, and at LoRA's usual learning rate."""
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    sets = [
        f"sft.lora={LORA}",
        f"dpo.lora={LORA}",
        "dpo.learning_rate=1e-3",
        "dpo.dropout=0",
        "loop.iterations=1",
        "sft.baseline=false",
        "eft.judge=m0",
    ]
    result = invoke("run", loop_config, "--out", run_dir, *[arg for s in sets for arg in ("--set", s)])
    assert result.exit_code == 0, result.output
    return run_dir


def test_lora_stages_save_merged_checkpoints_that_plain_transformers_loads(lora_run, tiny_model):
    base, m1, m2 = weights(tiny_model), weights(lora_run / "models" / "M1"), weights(lora_run / "models" / "M2")
    assert m1.keys() == base.keys() == m2.keys()  # merged: no lora_A/lora_B weights left
    assert any(not torch.equal(base[k], m1[k]) for k in base) and any(not torch.equal(m1[k], m2[k]) for k in m1)
    for name in ("M1", "M2"):
        assert (lora_run / "models" / name / "model.safetensors").exists() and not (
            lora_run / "models" / name / "adapter_config.json"
        ).exists()
    for stage, stats in (("sft", "sft.stats.json"), ("dpo1", "dpo.stats.json")):
        assert json.loads((lora_run / stage / stats).read_text())["lora"] is True
        assert json.loads((lora_run / stage / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_lora_dpo_reference_is_the_policy_with_its_adapter_off(tiny_model, tmp_path, monkeypatch):
    """After DPO steps have changed the adapter, the reference log-probs TRL trains against are those
    of the policy with its adapter off, not of the trained policy (whose rewards would all be 0),
    and no second copy of the model is loaded."""
    import selfreward.stages.dpo as dpo
    from selfreward.records import write_jsonl

    trainers = []
    real_train_and_save = dpo.train_and_save

    def keep_trainer(trainer, *args):
        trainers.append(trainer)
        return real_train_and_save(trainer, *args)

    monkeypatch.setattr(dpo, "train_and_save", keep_trainer)
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [{"prompt": p, "chosen": a, "rejected": "No."} for p, a in EXAMPLES])
    lora = LoRAConfig(r=4, alpha=8, dropout=0.0)
    config = DPOTrainingConfig(
        lora=lora, dropout=0, learning_rate=1e-2, final_learning_rate=1e-3, batch_size=2, epochs=2
    )
    model_config = ModelConfig(name_or_path=str(tiny_model))
    stats = dpo.TrainDPO(
        "dpo", model_config, config, str(tiny_model), None, pairs, tmp_path / "dpo", tmp_path / "M2", 0
    ).train_here()
    (trainer,) = trainers
    assert stats["steps"] == 4 and stats["reference"] == stats["policy"] and trainer.ref_model is None
    model = trainer.model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    reference = torch.cat(trainer.compute_ref_log_probs(model, batch))  # what DPO's loss compares the policy with
    trainer.ref_model = model  # with a reference model set, compute_ref_log_probs runs `model` as it is
    policy = torch.cat(trainer.compute_ref_log_probs(model, batch))
    with model.disable_adapter():
        adapter_off = torch.cat(trainer.compute_ref_log_probs(model, batch))
    assert (policy - adapter_off).abs().max() > 1e-3  # the steps changed the adapter
    assert torch.allclose(reference, adapter_off, rtol=0, atol=1e-5)


def test_no_last_step_checkpoint_and_a_kill_before_the_final_save_resumes_from_the_one_before(
    tiny_model, tmp_path, monkeypatch
):
    """A checkpoint each step, 2 steps: only checkpoint-1 is written (the final model is step 2's). A
    stage killed between its last step and the final save resumes from checkpoint-1 and merges the
    same adapter as an uninterrupted stage."""
    config = SFTTrainingConfig(
        lora=LoRAConfig(r=4, alpha=8),
        batch_size=2,
        save_steps=1,
        learning_rate=1e-3,
        final_learning_rate=1e-4,
        max_length=4096,
    )
    model_config = ModelConfig(name_or_path=str(tiny_model))

    def checkpoints(stage_dir):
        return [p.name for p in (stage_dir / "trainer").glob("checkpoint-*")]

    uninterrupted = run_step(
        TrainSFT("sft", model_config, config, str(tiny_model), EXAMPLES, tmp_path / "ref", tmp_path / "ref-m", 0)
    )
    assert uninterrupted["steps"] == 2 and checkpoints(tmp_path / "ref") == ["checkpoint-1"]

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("selfreward.training.save_final", killed)
    with pytest.raises(KeyboardInterrupt):
        run_step(
            TrainSFT("sft", model_config, config, str(tiny_model), EXAMPLES, tmp_path / "sft", tmp_path / "model", 0)
        )
    assert checkpoints(tmp_path / "sft") == ["checkpoint-1"] and not (tmp_path / "model").exists()
    monkeypatch.undo()
    resumed = run_step(
        TrainSFT("sft", model_config, config, str(tiny_model), EXAMPLES, tmp_path / "sft", tmp_path / "model", 0)
    )
    assert resumed["steps"] == 2 and resumed["loss_last"] == uninterrupted["loss_last"]
    expected, found = weights(tmp_path / "ref-m"), weights(tmp_path / "model")
    assert all(torch.equal(expected[k], found[k]) for k in expected)


@pytest.mark.parametrize(
    ("settings", "device", "deepspeed", "expected"),
    [
        ({"lora": LoRAConfig(), "bf16": True}, "cuda", False, torch.bfloat16),  # adapters train in fp32
        ({"bf16": True}, "cuda", False, torch.float32),  # full fine-tuning with plain Adam
        ({"bf16": True}, "cuda", True, torch.bfloat16),  # DeepSpeed keeps an fp32 master copy
        ({"lora": LoRAConfig(), "bf16": False}, "cuda", False, torch.float32),
        ({"lora": LoRAConfig(), "bf16": True}, "cpu", False, torch.float32),  # CPU: as before, fp32 weights
        ({"weights_dtype": "bfloat16"}, "cpu", False, torch.bfloat16),
    ],
)
def test_training_weights_dtype(settings, device, deepspeed, expected, monkeypatch):
    if deepspeed:
        monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    else:
        monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert weights_dtype(DPOTrainingConfig(**settings), device) == expected


def test_quantize_errors_name_the_key(loop_config, tiny_model, monkeypatch):
    monkeypatch.setattr("selfreward.config.find_spec", lambda name: None)
    with pytest.raises(SelfRewardError, match=r"^config error: sft\.quantize: .*4bit needs bitsandbytes"):
        load_config(str(loop_config), ["sft.quantize=4bit", f"sft.lora={LORA}"])
    monkeypatch.setattr("selfreward.config.find_spec", lambda name: object())  # as if bitsandbytes were installed
    with pytest.raises(SelfRewardError, match=r"^config error: dpo: .*quantize needs lora"):
        load_config(str(loop_config), ["dpo.quantize=4bit"])
    config = load_config(str(loop_config), ["sft.quantize=4bit", f"sft.lora={LORA}"])
    with pytest.raises(
        SelfRewardError, match=r"^sft\.quantize=4bit needs a CUDA GPU \(bitsandbytes\); this run trains on cpu$"
    ):
        load_for_training(config.model, str(tiny_model), config.sft, "cpu", "sft")


def test_lora_memory_bench_runs_on_the_tiny_model(tiny_model):
    bench = Path(__file__).resolve().parents[1] / "bench" / "lora_memory.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--model", str(tiny_model), "--pairs", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"one DPO step on {tiny_model}, 2 pairs, fp32 on CPU: peak RSS in MB"
    rows = {line[:28].strip(): line[28:].split() for line in lines[2:]}
    assert list(rows) == ["after imports", "after the step", "after saving"]
    for full, lora, ratio in rows.values():
        assert float(full) > 0 and float(lora) > 0 and float(ratio) > 0
