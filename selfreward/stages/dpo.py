"""Stage `dpo`: TRL's DPOTrainer on the iteration's pairs; M_{t+1} = DPO from M_t, reference per `dpo.reference`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from selfreward.batches import derive_seed
from selfreward.config import DPOTrainingConfig, ModelConfig
from selfreward.errors import SelfRewardError
from selfreward.models import pick_device, resolve_model
from selfreward.records import read_jsonl, write_jsonl
from selfreward.stage_inputs import PairRecord, read_records
from selfreward.steps import Column, Tools
from selfreward.training import (
    fits_length,
    launch,
    load_for_training,
    lora_config,
    merge_base,
    train_and_save,
    trainer_arguments,
)


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


ROBUST_SMOOTHING = 0.25
"""The label smoothing TRL's `robust` loss runs at inside `conservative_losses` (any value in (0, 0.5) gives the same loss)."""


def conservative_losses(epsilon: float) -> dict[str, Any]:
    """Conservative DPO, -(1-eps) log s(b d) - eps log s(-b d), from TRL's own losses: TRL 1.16
    applies label smoothing to `robust` only, whose loss at smoothing r is
    ((1-r) l(d) - r l(-d)) / (1-2r) with l(d) = -log s(b d). So (1+2eps) sigmoid - 2eps robust(r=1/4)
    = (1+2eps-3eps) l(d) + eps l(-d): exactly the conservative loss, minimised where s(b d) = 1-eps."""
    return {
        "loss_type": ["sigmoid", "robust"],
        "loss_weights": [1 + 2 * epsilon, -2 * epsilon],
        "label_smoothing": ROBUST_SMOOTHING,
    }


def loss_arguments(config: DPOTrainingConfig) -> dict[str, Any]:
    """TRL DPOTrainingConfig's loss_type and loss_weights (and label_smoothing): `label_smoothing` above 0
    turns DPO's sigmoid loss into the conservative one; rpo_alpha adds TRL's `sft` loss (NLL of chosen)."""
    smoothing = config.label_smoothing if isinstance(config.label_smoothing, float) else 0.0
    if smoothing > 0:
        arguments = conservative_losses(smoothing)
    else:
        arguments = {"loss_type": config.loss_type, "loss_weights": config.loss_weights}
    if config.rpo_alpha is None:
        return arguments
    weights = arguments["loss_weights"] or [1.0] * len(arguments["loss_type"])
    return arguments | {"loss_type": [*arguments["loss_type"], "sft"], "loss_weights": [*weights, config.rpo_alpha]}


def dpo_arguments(config: DPOTrainingConfig, output_dir: Path, seed: int, device: str) -> Any:
    """TRL's DPOTrainingConfig from ours."""
    from trl import DPOConfig

    return DPOConfig(
        **trainer_arguments(config, output_dir, seed, device),
        beta=config.beta,
        **loss_arguments(config),
        disable_dropout=config.dropout == 0,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
    )


TRAIN_PAIRS, VALIDATION_PAIRS = "train_pairs.jsonl", "validation_pairs.jsonl"
"""Files in the DPO stage directory: the pairs it trains on, and the held-out ones it is validated on."""


def validation_count(pairs: int, config: DPOTrainingConfig) -> int:
    """Pairs held out for validation: `eval_fraction` of them, at least `min_eval_pairs`, never more than half."""
    if config.eval_fraction == 0:
        return 0
    return min(pairs // 2, max(config.min_eval_pairs, round(config.eval_fraction * pairs)))


def split_pairs(
    pairs: list[dict[str, Any]], config: DPOTrainingConfig, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation): the validation pairs are drawn by a seeded hash of their ids, so a resumed
    or repeated stage holds out the same ones; both keep the file's order."""
    held = set(
        sorted(range(len(pairs)), key=lambda i: (derive_seed(seed, f"dpo-validation:{pairs[i].get('id', i)}"), i))[
            : validation_count(len(pairs), config)
        ]
    )
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


@dataclass(frozen=True)
class TrainDPO:
    """DPO from `policy` on `pairs_file` -> `target` and STAGE_DIR/dpo.stats.json, holding out validation
    pairs (STAGE_DIR/validation_pairs.jsonl; the rest in STAGE_DIR/train_pairs.jsonl). `reference` None
    means the policy as it was before this step (with LoRA: the policy with its adapter off; else a
    frozen copy). In this process, or in worker processes that receive this same step."""

    name: str
    model_config: ModelConfig
    config: DPOTrainingConfig
    policy: str
    reference: str | None
    pairs_file: Path
    stage_dir: Path
    target: Path
    seed: int
    child: bool = False
    """Train in a child process (selfreward.training.launch): its GPU memory is all back when it exits."""
    kind: ClassVar[str] = "dpo"
    columns: ClassVar[tuple[Column, ...]] = (
        Column("DPO loss", "train_loss", "dpo_loss"),
        Column("DPO reward acc", "reward_accuracies_mean", "dpo_reward_accuracy"),
        Column("DPO margin", "reward_margins_mean", "dpo_reward_margin"),
        Column("DPO steps", "steps", "dpo_steps"),
    )
    """Figures of dpo.stats.json in the run summary."""

    @property
    def stats_file(self) -> Path:
        return self.stage_dir / "dpo.stats.json"

    def outputs(self) -> tuple[Path, ...]:
        return (self.target / "config.json", self.stats_file)

    def run(self, tools: Tools) -> dict[str, Any]:
        pairs = read_records(self.pairs_file, PairRecord)
        if not pairs:
            raise SelfRewardError(f"{self.pairs_file} holds no pairs: nothing to train on")
        train, validation = split_pairs(pairs, self.config, self.seed)
        write_jsonl(self.stage_dir / VALIDATION_PAIRS, validation)
        write_jsonl(self.stage_dir / TRAIN_PAIRS, train)
        tools.engines.close()  # training takes the memory a loaded model held
        return launch(replace(self, pairs_file=self.stage_dir / TRAIN_PAIRS), pick_device(self.model_config.device))

    def train_here(self) -> dict[str, Any]:
        """Train on `pairs_file` in this process (one worker, or the run itself; `run` hands the workers
        its training split). An explicit `reference` is loaded as a second model, also with LoRA (as
        the policy: 4-bit with `quantize`). Pairs longer than `max_length` are dropped and counted
        (truncation would cut an answer's end)."""
        from datasets import Dataset
        from trl import DPOTrainer

        pairs = read_jsonl(self.pairs_file)
        device = pick_device(self.model_config.device)
        config = self.config
        # The arguments come before the model: under DeepSpeed ZeRO-3 they make loading shard the weights.
        args = dpo_arguments(config, self.stage_dir / "trainer", self.seed, device)
        model, tokenizer = load_for_training(self.model_config, self.policy, config, device, "dpo")
        fitting = [
            p for p in pairs if fits_length(tokenizer, p["prompt"], [p["chosen"], p["rejected"]], config.max_length)
        ]
        if not fitting:
            raise SelfRewardError(
                f"none of the {len(pairs)} pairs in {self.pairs_file} fits dpo.max_length={config.max_length} tokens"
            )
        ref_model = (
            load_for_training(self.model_config, self.reference, config, device, "dpo")[0] if self.reference else None
        )
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=Dataset.from_list(dpo_rows(fitting)),
            processing_class=tokenizer,
            peft_config=lora_config(config),
        )
        stats = {
            "stage": "dpo",
            "policy": self.policy,
            "reference": self.reference or self.policy,
            "pairs": len(fitting),
            "dropped_too_long": len(pairs) - len(fitting),
            "loss_type": args.loss_type,
            "loss_weights": args.loss_weights,
            "label_smoothing": config.label_smoothing,
        }
        metric_keys = ("loss", "rewards/accuracies", "rewards/margins")
        return train_and_save(
            trainer,
            tokenizer,
            self.target,
            metric_keys,
            merge_base(self.model_config, self.policy, config, device),
            stats,
            self.stats_file,
        )
