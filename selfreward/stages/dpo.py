"""Stage `dpo`: TRL's DPOTrainer on the iteration's pairs; M_{t+1} = DPO from M_t, reference M_t."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfreward.config import DPOConfig, ModelConfig
from selfreward.errors import SelfRewardError
from selfreward.models import pick_device
from selfreward.records import read_jsonl, write_json
from selfreward.training import fits_length, load_for_training, train_and_save, trainer_arguments


def dpo_rows(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pairs.jsonl rows -> TRL's conversational preference format (the chat template applies)."""
    return [
        {
            "prompt": [{"role": "user", "content": p["prompt"]}],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
        }
        for p in pairs
    ]


def train_dpo(model_config: ModelConfig, config: DPOConfig, policy: str, reference: str | None, pairs_file: Path, stage_dir: Path, target: Path, seed: int) -> dict[str, Any]:
    """DPO from `policy` on `pairs_file` -> `target`. `reference` None means a frozen copy of the policy.
    Pairs longer than `max_length` are dropped and counted (truncation would cut an answer's end)."""
    pairs = read_jsonl(pairs_file)
    if not pairs:
        raise SelfRewardError(f"{pairs_file} holds no pairs: nothing to train on")
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    device = pick_device(model_config.device)
    model, tokenizer = load_for_training(model_config, policy, config)
    fitting = [p for p in pairs if fits_length(tokenizer, p["prompt"], [p["chosen"], p["rejected"]], config.max_length)]
    if not fitting:
        raise SelfRewardError(f"none of the {len(pairs)} pairs in {pairs_file} fits dpo.max_length={config.max_length} tokens")
    ref_model = load_for_training(model_config, reference, config)[0] if reference else None
    args = TRLDPOConfig(
        **trainer_arguments(config, stage_dir / "trainer", seed, device),
        beta=config.beta,
        loss_type=[config.loss_type],
        disable_dropout=config.dropout == 0,
    )
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(dpo_rows(fitting)), processing_class=tokenizer)
    stats = {
        "stage": "dpo",
        "policy": policy,
        "reference": reference or policy,
        "pairs": len(fitting),
        "dropped_too_long": len(pairs) - len(fitting),
        "loss_type": config.loss_type,
        **train_and_save(trainer, tokenizer, stage_dir, target, ("loss", "rewards/accuracies", "rewards/margins")),
    }
    write_json(stage_dir / "dpo.stats.json", stats)
    return stats
