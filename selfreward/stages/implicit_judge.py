"""Stage `judge` with `judge.kind: implicit`: DPO's implicit reward as the judge (DICE, Chen et al., ICLR 2025).

Each candidate's score is beta * (log pi_t(y|x) - log pi_ref(y|x)), optionally per answer token:
how much more likely M_t finds the answer than the model it was trained from. No judgment is
generated, so there is no text to parse; the record keeps both log-probabilities. Two forward
passes per candidate (one per model, each loaded alone, in full precision on a CPU), against K
generated judgments of up to `judge.max_new_tokens` tokens for the text judge.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfreward.config import JudgeConfig, ModelConfig
from selfreward.errors import SelfRewardError
from selfreward.logprobs import implicit_rewards, score_with_model
from selfreward.records import StageFiles
from selfreward.stage_inputs import CandidateRecord, read_records
from selfreward.steps import Tools

METHOD = "implicit"


@dataclass(frozen=True)
class ImplicitJudge:
    """One implicit-reward judgment per candidate in `out_dir`: `policy` against `reference`."""

    name: str
    config: JudgeConfig
    model_config: ModelConfig
    out_dir: Path
    policy: str
    reference: str

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "judgments.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        candidates = StageFiles(self.out_dir, "candidates")
        if not candidates.records.exists():
            raise SelfRewardError(f"{candidates.records} not found: run the candidates stage first")
        rows = read_records(candidates.records, CandidateRecord)
        tools.engines.close()  # the two models are loaded one at a time
        items = [(c["prompt"], c["text"]) for c in rows]
        policy = score_with_model(self.model_config, self.policy, items, self.model_config.max_length)
        reference = score_with_model(self.model_config, self.reference, items, self.model_config.max_length)
        rewards = implicit_rewards(policy, reference, self.config.beta, self.config.per_token)
        records = [
            {
                "id": f"{c['id']}-j",
                "candidate_id": c["id"],
                "prompt_id": c["prompt_id"],
                "text": "",
                "num_tokens": 0,
                "text_score": None,
                "text_method": None,
                "score": round(reward, 6),
                "method": METHOD,
                "logp": round(p.logp, 4),
                "reference_logp": round(r.logp, 4),
                "answer_tokens": p.tokens,
            }
            for c, p, r, reward in zip(rows, policy, reference, rewards)
        ]
        stats = {
            "stage": "judge",
            "kind": METHOD,
            "policy": self.policy,
            "reference": self.reference,
            "beta": self.config.beta,
            "per_token": self.config.per_token,
            **reward_stats(rewards),
        }
        StageFiles(self.out_dir, "judgments").finish(records, stats)
        return stats


def reward_stats(rewards: list[float]) -> dict[str, Any]:
    """Judge health for implicit rewards: how many, their spread (exact ties give no pair)."""
    return {
        "judgments": len(rewards),
        "valid_rate": 1.0 if rewards else None,
        "parse_rate_text": None,
        "mean_score": round(statistics.fmean(rewards), 4) if rewards else None,
        "score_sd": round(statistics.pstdev(rewards), 4) if rewards else None,
        "score_min": round(min(rewards), 4) if rewards else None,
        "score_max": round(max(rewards), 4) if rewards else None,
        "score_source": {METHOD: len(rewards)},
    }
