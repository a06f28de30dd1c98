"""Stage `sft`: TRL's SFTTrainer on prompt/completion rows, loss on completion tokens only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfreward.config import ModelConfig, SFTConfig
from selfreward.errors import SelfRewardError
from selfreward.models import pick_device
from selfreward.records import write_json
from selfreward.training import fits_length, load_for_training, train_and_save, trainer_arguments


def sft_rows(examples: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """(prompt, completion) -> TRL's conversational prompt/completion format (the chat template applies)."""
    return [{"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]} for p, c in examples]


def train_sft(model_config: ModelConfig, config: SFTConfig, base_model: str, examples: list[tuple[str, str]], stage_dir: Path, target: Path, seed: int) -> dict[str, Any]:
    """Fine-tune `base_model` on `examples` and save the result to `target`; returns stats.
    Examples longer than `max_length` are dropped and counted (truncation would cut the target)."""
    if not examples:
        raise SelfRewardError(f"no training examples for {target.name}")
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    device = pick_device(model_config.device)
    model, tokenizer = load_for_training(model_config, base_model, config)
    fitting = [(p, c) for p, c in examples if fits_length(tokenizer, p, [c], config.max_length)]
    if not fitting:
        raise SelfRewardError(f"none of the {len(examples)} training examples for {target.name} fits sft.max_length={config.max_length} tokens")
    args = TRLSFTConfig(**trainer_arguments(config, stage_dir / "trainer", seed, device), completion_only_loss=True, packing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(sft_rows(fitting)), processing_class=tokenizer)
    counts = {"examples": len(fitting), "dropped_too_long": len(examples) - len(fitting)}
    stats = {"stage": "sft", "base_model": base_model, **counts, **train_and_save(trainer, tokenizer, stage_dir, target, ("loss",))}
    write_json(stage_dir / "sft.stats.json", stats)
    return stats
