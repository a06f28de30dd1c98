"""Stage `dpo`: TRL's DPOTrainer on the iteration's pairs; M_{t+1} = DPO from M_t, reference per `dpo.reference`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfreward.config import DPOConfig, ModelConfig
from selfreward.errors import SelfRewardError
from selfreward.models import pick_device, resolve_model
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


def dpo_reference(setting: str, run_model: Callable[[str], Path]) -> str | None:
    """The reference model of an iteration's DPO by `dpo.reference`: None (previous: a frozen
    copy of M_t), M1 (initial, alias m1), the SFT baseline (sft), or the given model path/id."""
    named = {"previous": None, "initial": "M1", "m1": "M1", "sft": "sft_baseline"}
    if setting.lower() not in named:
        return resolve_model(setting)
    name = named[setting.lower()]
    return None if name is None else str(run_model(name))


def loss_arguments(config: DPOConfig) -> dict[str, Any]:
    """TRL DPOConfig's loss_type and loss_weights; rpo_alpha adds TRL's `sft` loss (NLL of chosen)."""
    if config.rpo_alpha is None:
        return {"loss_type": config.loss_type}
    return {"loss_type": [*config.loss_type, "sft"], "loss_weights": [1.0] * len(config.loss_type) + [config.rpo_alpha]}


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
        **loss_arguments(config),
        disable_dropout=config.dropout == 0,
    )
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(dpo_rows(fitting)), processing_class=tokenizer)
    stats = {
        "stage": "dpo",
        "policy": policy,
        "reference": reference or policy,
        "pairs": len(fitting),
        "dropped_too_long": len(pairs) - len(fitting),
        "loss_type": args.loss_type,
        "loss_weights": args.loss_weights,
        **train_and_save(trainer, tokenizer, stage_dir, target, ("loss", "rewards/accuracies", "rewards/margins")),
    }
    write_json(stage_dir / "dpo.stats.json", stats)
    return stats
