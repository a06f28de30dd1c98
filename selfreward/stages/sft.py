"""Stage `sft`: TRL's SFTTrainer on prompt/completion rows, loss on completion tokens only."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from selfreward.config import ModelConfig, SFTConfig
from selfreward.errors import SelfRewardError
from selfreward.models import pick_device
from selfreward.training import fits_length, load_for_training, lora_config, merge_base, train_and_save, train_here_or_in_workers, trainer_arguments


def sft_rows(examples: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """(prompt, completion) -> TRL's conversational prompt/completion format (the chat template applies)."""
    return [{"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]} for p, c in examples]


def train_sft(model_config: ModelConfig, config: SFTConfig, base_model: str, examples: list[tuple[str, str]], stage_dir: Path, target: Path, seed: int) -> dict[str, Any]:
    """Fine-tune `base_model` on `examples` and save the result to `target`; returns stats.
    In this process, or in `accelerate launch` workers when `sft.accelerate_config` is set."""
    if not examples:
        raise SelfRewardError(f"no training examples for {target.name}")
    arguments = {"model_config": model_config.model_dump(mode="json"), "config": config.model_dump(mode="json"), "base_model": base_model,
                 "examples": examples, "stage_dir": str(stage_dir), "target": str(target), "seed": seed}
    here = partial(train_sft_here, model_config, config, base_model, examples, stage_dir, target, seed)
    return train_here_or_in_workers("sft", config, pick_device(model_config.device), arguments, stage_dir, stage_dir / "sft.stats.json", here)


def train_sft_here(model_config: ModelConfig, config: SFTConfig, base_model: str, examples: list[tuple[str, str]], stage_dir: Path, target: Path, seed: int) -> dict[str, Any]:
    """`train_sft` in this process (one `accelerate launch` worker, or the run itself).
    Examples longer than `max_length` are dropped and counted (truncation would cut the target)."""
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    device = pick_device(model_config.device)
    # The arguments come before the model: under DeepSpeed ZeRO-3 they make loading shard the weights.
    args = TRLSFTConfig(**trainer_arguments(config, stage_dir / "trainer", seed, device), completion_only_loss=True, packing=False)
    model, tokenizer = load_for_training(model_config, base_model, config, device, "sft")
    fitting = [(p, c) for p, c in examples if fits_length(tokenizer, p, [c], config.max_length)]
    if not fitting:
        raise SelfRewardError(f"none of the {len(examples)} training examples for {target.name} fits sft.max_length={config.max_length} tokens")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(sft_rows(fitting)), processing_class=tokenizer, peft_config=lora_config(config))
    stats = {"stage": "sft", "base_model": base_model, "examples": len(fitting), "dropped_too_long": len(examples) - len(fitting)}
    return train_and_save(trainer, tokenizer, target, ("loss",), merge_base(model_config, base_model, config, device), stats, stage_dir / "sft.stats.json")
