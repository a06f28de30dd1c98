"""SFT and DPO step time in fp32 vs bf16 mixed precision on the embedded SmolLM2, side by side.

    python bench/train_precision.py [--examples 16]

Prints seconds per example for each precision and the bf16/fp32 ratio (what `bf16: auto` relies on).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from selfreward.config import load_config
from selfreward.models import resolve_model
from selfreward.seed_data import load_ift
from selfreward.stages.dpo import TrainDPO
from selfreward.stages.sft import TrainSFT
from selfreward.steps import run_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=16)
    args = parser.parse_args()
    model = resolve_model("smollm2-135m-instruct")
    examples = [(e.prompt, e.response) for e in load_ift(["demo"])[0][: args.examples]]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.jsonl"
        pairs.write_text(
            "".join(
                json.dumps({"prompt": p, "chosen": r, "rejected": r.split(".")[0] + "."}) + "\n" for p, r in examples
            )
        )
        for bf16 in (False, True):
            cfg = load_config("demo", [f"sft.bf16={str(bf16).lower()}", f"dpo.bf16={str(bf16).lower()}"])
            name = "bf16" if bf16 else "fp32"
            start = time.perf_counter()
            run_step(
                TrainSFT(
                    "sft", cfg.model, cfg.sft, model, examples, Path(tmp) / f"sft-{name}", Path(tmp) / f"m-{name}", 0
                )
            )
            results[f"sft_{name}"] = (time.perf_counter() - start) / len(examples)
            start = time.perf_counter()
            run_step(
                TrainDPO(
                    "dpo", cfg.model, cfg.dpo, model, None, pairs, Path(tmp) / f"dpo-{name}", Path(tmp) / f"d-{name}", 0
                )
            )
            results[f"dpo_{name}"] = (time.perf_counter() - start) / len(examples)
    for stage in ("sft", "dpo"):
        fp32, bf16 = results[f"{stage}_fp32"], results[f"{stage}_bf16"]
        print(f"{stage}: fp32 {fp32:.2f} s/example, bf16 {bf16:.2f} s/example, bf16/fp32 time ratio {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
