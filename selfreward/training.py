"""What SFT and DPO share: TRL arguments from our config, dropout, precision, checkpoints, metrics."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from selfreward.config import ModelConfig, TrainConfig
from selfreward.models import cpu_supports_bf16, load_model, load_tokenizer, resolve_model


def use_bf16(setting: bool | str, device: str) -> bool:
    if setting != "auto":
        return bool(setting)
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def load_for_training(model_config: ModelConfig, name_or_path: str, train: TrainConfig) -> tuple[Any, Any]:
    """Model in fp32 (mixed precision comes from the Trainer) with the configured dropout, and its tokenizer."""
    path = resolve_model(name_or_path)
    tokenizer = load_tokenizer(path, train.max_length, model_config.trust_remote_code)
    model = load_model(path, torch.float32, "cpu", model_config.trust_remote_code, model_config.allow_pickle)
    set_dropout(model, train.dropout)
    return model, tokenizer


def set_dropout(model: Any, rate: float) -> None:
    """Train with dropout `rate` on every dropout module and attention-dropout attribute (Llama,
    Mistral, Qwen read `attention_dropout` at init). `model.config` is left alone, so the saved
    checkpoint keeps the base model's settings and inference never inherits the training rate."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = rate
        elif isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = rate


def conversation_tokens(tokenizer: Any, prompt: str, completion: str) -> int:
    """Tokens of a prompt/answer exchange rendered with the chat template, as the trainers see it."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fits_length(tokenizer: Any, prompt: str, completions: list[str], max_length: int) -> bool:
    """True when every prompt + completion fits `max_length`: longer ones would be cut by the
    trainer from the end, losing the target (an EFT score, an answer's end)."""
    return all(conversation_tokens(tokenizer, prompt, c) <= max_length for c in completions)


def trainer_arguments(train: TrainConfig, output_dir: Path, seed: int, device: str) -> dict[str, Any]:
    """Keyword arguments shared by TRL's SFTConfig and DPOConfig."""
    accumulation = train.batch_size // train.micro_batch_size
    if device == "cuda" and torch.cuda.device_count() > 1:
        accumulation = max(1, accumulation // torch.cuda.device_count())
    return {
        "output_dir": str(output_dir),
        "learning_rate": train.learning_rate,
        "lr_scheduler_type": "polynomial",  # power 1: linear decay from learning_rate to lr_end
        "lr_scheduler_kwargs": {"lr_end": train.final_learning_rate, "power": 1.0},
        "warmup_steps": 0,
        "per_device_train_batch_size": train.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "num_train_epochs": train.epochs,
        "max_length": train.max_length,
        "bf16": use_bf16(train.bf16, device),
        checkpointing_argument(): train.gradient_checkpointing,
        "use_cpu": device == "cpu",
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "logging_steps": 1,
        "report_to": train.report_to or "none",
        "seed": seed,
        "data_seed": seed,
        "disable_tqdm": False,
    }


def checkpointing_argument() -> str:
    """Transformers' name for activation checkpointing: `activation_checkpointing` where it exists,
    `gradient_checkpointing` in transformers 5.20 (the newest vllm 0.33 accepts), which predates it."""
    from transformers import TrainingArguments

    return "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient_checkpointing"


def latest_checkpoint(output_dir: Path) -> str | None:
    """The newest complete Trainer checkpoint (one a kill cut short has no trainer_state.json, which
    Transformers writes last)."""
    complete = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


def save_final(trainer: Any, tokenizer: Any, target: Path) -> None:
    """Save a plain Hugging Face checkpoint (safetensors) atomically: a temp dir, then a rename."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def log_metrics(trainer: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """First/last/mean of per-step logged values, plus the trainer's final summary."""
    history = [h for h in trainer.state.log_history if "loss" in h]
    out: dict[str, Any] = {"steps": trainer.state.global_step}
    for key in keys:
        values = [h[key] for h in history if key in h and isinstance(h[key], (int, float)) and math.isfinite(h[key])]
        if values:
            name = key.replace("rewards/", "reward_")
            out[f"{name}_first"] = round(values[0], 4)
            out[f"{name}_last"] = round(values[-1], 4)
            out[f"{name}_mean"] = round(sum(values) / len(values), 4)
    if "loss_mean" in out:  # over every step, also after a resume (Transformers' own train_loss covers the last attempt only)
        out["train_loss"] = out["loss_mean"]
    return out


def train_and_save(trainer: Any, tokenizer: Any, stage_dir: Path, target: Path, metric_keys: tuple[str, ...]) -> dict[str, Any]:
    """Train (from the stage's last Trainer checkpoint, if any), save `target`; returns metrics."""
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=latest_checkpoint(stage_dir / "trainer"))
    save_final(trainer, tokenizer, target)
    return {"bf16": trainer.args.bf16, **log_metrics(trainer, metric_keys), "seconds": round(time.perf_counter() - started, 1), "model": str(target)}
