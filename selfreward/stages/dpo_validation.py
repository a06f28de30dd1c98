"""Stage `validate`: did DPO learn a preference that holds beyond its training pairs?

On the pairs the DPO stage held out (`dpo.eval_fraction`), DPO's implicit reward
r(y) = beta * (log pi(y|x) - log pi_ref(y|x)) is computed for chosen and rejected, with pi = M_t
(before) and pi = M_{t+1} (after), pi_ref the stage's reference. Accuracy: the share of pairs whose
chosen answer gets the higher reward (a tie counts half, so before training with reference M_t,
where every reward is 0, it is exactly 50%); margin: the mean reward difference. Each with a 95%
bootstrap interval over pairs, and the paired change after - before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from selfreward.config import DPOTrainingConfig, ModelConfig
from selfreward.intervals import mean_ci, paired_difference_ci, verdict
from selfreward.logprobs import implicit_rewards, score_with_model
from selfreward.models import load_tokenizer, resolve_model
from selfreward.records import read_jsonl, write_json, write_jsonl
from selfreward.stages.dpo import VALIDATION_PAIRS
from selfreward.steps import Column, Tools
from selfreward.training import fits_length


def pair_outcomes(rewards: list[float]) -> tuple[list[float], list[float]]:
    """Per pair (chosen, rejected interleaved in `rewards`): correct (1, a tie 0.5, else 0) and margin."""
    margins = [rewards[i] - rewards[i + 1] for i in range(0, len(rewards), 2)]
    return [1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins], margins


def validate_dpo(
    model_config: ModelConfig,
    config: DPOTrainingConfig,
    before: str,
    after: str,
    reference: str | None,
    pairs_file: Path,
    out_dir: Path,
    seed: int,
) -> dict[str, Any]:
    """Validation figures of M_t (`before`) and M_{t+1} (`after`) against `reference` (None: M_t) on the
    held-out pairs -> OUT/validation.jsonl (per pair) and OUT/validation.stats.json."""
    tokenizer = load_tokenizer(resolve_model(before), config.max_length, model_config.trust_remote_code)
    pairs = [
        p
        for p in read_jsonl(pairs_file)
        if fits_length(tokenizer, p["prompt"], [p["chosen"], p["rejected"]], config.max_length)
    ]
    items = [(p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")]
    scored = {
        name: score_with_model(model_config, name, items, config.max_length)
        for name in dict.fromkeys([before, after, reference or before])
    }
    ref = scored[reference or before]
    correct_before, margins_before = pair_outcomes(implicit_rewards(scored[before], ref, config.beta))
    correct_after, margins_after = pair_outcomes(implicit_rewards(scored[after], ref, config.beta))
    write_jsonl(
        out_dir / "validation.jsonl",
        [
            {"id": p.get("id"), "margin_before": round(b, 6), "margin_after": round(a, 6)}
            for p, b, a in zip(pairs, margins_before, margins_after)
        ],
    )
    change = {
        "accuracy": paired_difference_ci(correct_after, correct_before, seed=seed),
        "margin": paired_difference_ci(margins_after, margins_before, seed=seed),
    }
    stats = {
        "stage": "dpo-validation",
        "pairs": len(pairs),
        "beta": config.beta,
        "reference": reference or before,
        "before": {"accuracy": mean_ci(correct_before, seed), "margin": mean_ci(margins_before, seed)},
        "after": {"accuracy": mean_ci(correct_after, seed), "margin": mean_ci(margins_after, seed)},
        "change": change,
        "verdict": verdict(change["accuracy"]),
    }
    write_json(out_dir / "validation.stats.json", stats)
    return stats


@dataclass(frozen=True)
class ValidateDPO:
    """Validation of one DPO step on its held-out pairs -> STAGE_DIR/validation.stats.json (and validation.jsonl)."""

    name: str
    model_config: ModelConfig
    config: DPOTrainingConfig
    before: str
    after: str
    reference: str | None
    stage_dir: Path
    seed: int
    columns: ClassVar[tuple[Column, ...]] = (
        Column("DPO val acc before %", "before.accuracy", "dpo_validation_accuracy_before", percent=True),
        Column("DPO val acc after %", "after.accuracy", "dpo_validation_accuracy_after", percent=True),
        Column("DPO val margin after", "after.margin", "dpo_validation_margin_after"),
        Column("DPO val pairs", "pairs", "dpo_validation_pairs"),
    )
    """Figures of validation.stats.json (held-out pairs, 95% intervals) in the run summary."""

    def outputs(self) -> tuple[Path, ...]:
        return (self.stage_dir / "validation.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        tools.engines.close()  # the models are loaded one at a time, in full precision
        return validate_dpo(
            self.model_config,
            self.config,
            self.before,
            self.after,
            self.reference,
            self.stage_dir / VALIDATION_PAIRS,
            self.stage_dir,
            self.seed,
        )
