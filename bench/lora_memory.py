"""Peak memory (RSS) of one DPO step with LoRA vs full fine-tuning, each in a fresh process, side by side.

    python bench/lora_memory.py [--model smollm2-135m-instruct] [--pairs 4]

Each child process trains `train_dpo` on the same pairs from the demo ranked data (best vs worst
answer) for one optimizer step, fp32 on CPU, and reports its peak RSS three times: after the imports,
when the step is done (before saving), and at the end (saving included: with LoRA the adapter is
merged into a fresh copy of the base weights). Full fine-tuning holds Adam's two moments and a
gradient for every weight plus a frozen reference copy; LoRA holds them for the adapters only and
uses the policy with its adapter off as the reference.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODES = ("full", "lora")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes


def one_step(mode: str, model: str, pairs: int, workdir: Path) -> dict[str, float]:
    """In the child: one DPO step in `mode`; the peak RSS at each point."""
    import peft  # noqa: F401 - loaded before the first figure, like the rest of the libraries
    import trl  # noqa: F401

    from selfreward import training
    from selfreward.config import DPOTrainingConfig, LoRAConfig, ModelConfig
    from selfreward.models import resolve_model
    from selfreward.seed_data import load_ranked
    from selfreward.stages.dpo import TrainDPO
    from selfreward.steps import run_step

    peaks = {"imports": peak_rss_mb()}
    rows = [
        {"prompt": g.prompt, "chosen": g.responses[0].text, "rejected": g.responses[-1].text}
        for g in load_ranked(["demo"])[0][:pairs]
    ]
    pairs_file = workdir / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    save_final = training.save_final

    def measured_save(trainer: Any, tokenizer: Any, target: Path, base: Callable[[], Any] | None) -> None:
        peaks["step"] = peak_rss_mb()
        save_final(trainer, tokenizer, target, base)

    training.save_final = measured_save  # train_and_save looks it up at call time
    config = DPOTrainingConfig(
        batch_size=len(rows), lora=LoRAConfig() if mode == "lora" else None, bf16=False, dropout=0.0, max_length=2048
    )
    run_step(
        TrainDPO(
            "dpo",
            ModelConfig(name_or_path=model, device="cpu"),
            config,
            resolve_model(model),
            None,
            pairs_file,
            workdir / "dpo",
            workdir / "model",
            0,
        )
    )
    peaks["with_save"] = peak_rss_mb()
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="model id, directory or the embedded smollm2-135m-instruct"
    )
    parser.add_argument("--pairs", type=int, default=4, help="preference pairs in the one optimizer step")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one_step(args.child, args.model, args.pairs, Path(tmp))))
        return
    results = {}
    for mode in MODES:
        child = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--model", args.model, "--pairs", str(args.pairs)],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            sys.exit(f"the {mode} child failed:\n{child.stderr[-2000:]}")
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"one DPO step on {args.model}, {args.pairs} pairs, fp32 on CPU: peak RSS in MB")
    print(f"{'':<28}{'full':>10}{'LoRA':>10}{'LoRA/full':>11}")
    for key, label in (("imports", "after imports"), ("step", "after the step"), ("with_save", "after saving")):
        full, lora = results["full"][key], results["lora"][key]
        print(f"{label:<28}{full:>10.0f}{lora:>10.0f}{lora / full:>11.2f}")


if __name__ == "__main__":
    main()
