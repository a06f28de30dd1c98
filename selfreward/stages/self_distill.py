"""Step `self_distill`: the seed model's own greedy answers to the IFT prompts, for M1's SFT
(`sft.m1_self_distill`).

Self-distillation (SDFT, Yang et al., ACL 2024): M1 trains on what M0 already answers instead of the
IFT data's own answers, so that learning to judge (EFT) does not pull the way it answers away from
the seed model. Answers cut at `sft.self_distill_max_new_tokens`, and empty ones, are dropped and counted: a cut
answer followed by an end-of-turn would teach M1 to stop mid-sentence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfreward.answers import generate_answers
from selfreward.engines.base import Sampling
from selfreward.records import read_jsonl, write_json, write_jsonl
from selfreward.steps import Tools


@dataclass(frozen=True)
class SelfDistill:
    """`model` answers `prompts` greedily -> OUT/answers.jsonl (finished answers only) and OUT/self_distill.stats.json."""

    name: str
    model: str
    prompts: list[str]
    out_dir: Path
    max_new_tokens: int
    seed: int
    batch_size: int

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "answers.jsonl", self.out_dir / "self_distill.stats.json")

    def run(self, tools: Tools) -> dict[str, Any]:
        started = time.perf_counter()
        rows = [{"id": f"d{i:04d}", "prompt": p} for i, p in enumerate(self.prompts)]
        found = generate_answers(
            tools.engines.get(self.model),
            rows,
            self.out_dir,
            "M0",
            Sampling(0.0, 1.0, self.max_new_tokens),
            self.seed,
            self.batch_size,
        )
        kept = [found[r["id"]] for r in rows if found[r["id"]]["finished"] and found[r["id"]]["text"].strip()]
        write_jsonl(
            self.out_dir / "answers.jsonl",
            [{"id": r["id"], "prompt": r["prompt"], "completion": r["text"]} for r in kept],
        )
        stats = {
            "stage": "self_distill",
            "model": self.model,
            "prompts": len(rows),
            "kept": len(kept),
            "dropped_unfinished_or_empty": len(rows) - len(kept),
            "mean_tokens": round(sum(r["num_tokens"] for r in kept) / len(kept), 1) if kept else 0.0,
            "seconds": round(time.perf_counter() - started, 1),
        }
        write_json(self.out_dir / "self_distill.stats.json", stats)
        return stats


def distilled_examples(out_dir: Path) -> list[tuple[str, str]]:
    """The (prompt, answer) examples a finished `self_distill` step wrote."""
    return [(r["prompt"], r["completion"]) for r in read_jsonl(out_dir / "answers.jsonl")]
