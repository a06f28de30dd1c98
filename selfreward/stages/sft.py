"""Step `sft`: TRL's SFTTrainer on prompt/completion rows, loss on completion tokens only (the SFT
baseline on IFT data; M1 on IFT + EFT data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from selfreward.config import ModelConfig, SFTTrainingConfig
from selfreward.errors import SelfRewardError
from selfreward.models import pick_device
from selfreward.steps import Tools
from selfreward.training import (
    fits_length,
    launch,
    load_for_training,
    lora_config,
    merge_base,
    train_and_save,
    trainer_arguments,
)


def sft_rows(examples: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """(prompt, completion) -> TRL's conversational prompt/completion format (the chat template applies)."""
    return [
        {"prompt": [{"role": "user", "content": p}], "completion": [{"role": "assistant", "content": c}]}
        for p, c in examples
    ]


@dataclass(frozen=True)
class TrainSFT:
    """Fine-tune `base_model` on `examples` -> `target` (a Hugging Face checkpoint) and STAGE_DIR/sft.stats.json.
    In this process, or in worker processes (`sft.accelerate_config`, `sft.child_process`), which
    receive this same step (selfreward.launch)."""

    name: str
    model_config: ModelConfig
    config: SFTTrainingConfig
    base_model: str
    examples: list[tuple[str, str]]
    stage_dir: Path
    target: Path
    seed: int
    child: bool = False
    """Train in a child process (selfreward.training.launch): its GPU memory is all back when it exits."""
    kind: ClassVar[str] = "sft"

    @property
    def stats_file(self) -> Path:
        return self.stage_dir / "sft.stats.json"

    def outputs(self) -> tuple[Path, ...]:
        return (self.target / "config.json", self.stats_file)

    def run(self, tools: Tools) -> dict[str, Any]:
        if not self.examples:
            raise SelfRewardError(f"no training examples for {self.target.name}")
        tools.engines.close()  # training takes the memory a loaded model held
        return launch(self, pick_device(self.model_config.device))

    def train_here(self) -> dict[str, Any]:
        """Train in this process (one worker, or the run itself). Examples longer than `max_length`
        are dropped and counted (truncation would cut the target)."""
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        device = pick_device(self.model_config.device)
        # The arguments come before the model: under DeepSpeed ZeRO-3 they make loading shard the weights.
        args = SFTConfig(
            **trainer_arguments(self.config, self.stage_dir / "trainer", self.seed, device),
            completion_only_loss=True,
            packing=False,
        )
        model, tokenizer = load_for_training(self.model_config, self.base_model, self.config, device, "sft")
        fitting = [(p, c) for p, c in self.examples if fits_length(tokenizer, p, [c], self.config.max_length)]
        if not fitting:
            raise SelfRewardError(
                f"none of the {len(self.examples)} training examples for {self.target.name} fits sft.max_length={self.config.max_length} tokens"
            )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(sft_rows(fitting)),
            processing_class=tokenizer,
            peft_config=lora_config(self.config),
        )
        stats = {
            "stage": "sft",
            "base_model": self.base_model,
            "examples": len(fitting),
            "dropped_too_long": len(self.examples) - len(fitting),
        }
        base = merge_base(self.model_config, self.base_model, self.config, device)
        return train_and_save(trainer, tokenizer, self.target, ("loss",), base, stats, self.stats_file)
