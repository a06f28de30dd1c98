"""DPO seconds per pair and peak RSS: today's setup beside faster ones, each in a fresh process.

    python bench/dpo_speed.py [--model smollm2-135m-instruct] [--pairs FILE] [--count 32] [--setups today,mb4,...]

Every setup trains `TrainDPO.train_here` (what the loop runs) from the same model on the same pairs with
the same seed: the demo preset's `dpo` section with the setup's keys changed. Pairs come from
`--pairs` (a run's ITER/pairs.jsonl) or from the oasst1 validation groups in ../shared/data (chosen =
rank 0, rejected = the last rank): the first `--count` that fit `--max-length`.

s/pair = (DPOTrainer construction + the Trainer's train_runtime) / pairs, model load and saving
excluded. The construction counts because it holds the reference's cost outside the steps: loading
the frozen copy (today) or the pass that precomputes its log-probs. Peak RSS is the child's whole
life (load, train, save). A setup is correct when every logged optimizer-step loss is within
`--tolerance` of today's. Dropout is `--dropout` in every setup (default 0, so that the losses of
differently batched setups can agree; the demo trains with 0.1, whose masks differ per setup).
Not offered because TRL 1.16 lacks them: `padding_free` (it warns and pads), `use_logits_to_keep`
(its fused LM head already computes only the labels' log-probs), truncation other than keep_start.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shared_data import OASST1_VALIDATION_GROUPS

SETUPS: dict[str, dict[str, Any]] = {
    "today": {},
    "precompute": {"precompute_ref_log_probs": True},
    "mb2": {"micro_batch_size": 2},
    "mb4": {"micro_batch_size": 4},
    "mb8": {"micro_batch_size": 8},
    "bf16": {"bf16": True},
    "precompute+mb4": {"precompute_ref_log_probs": True, "micro_batch_size": 4},
    "precompute+mb8": {"precompute_ref_log_probs": True, "micro_batch_size": 8},
    "precompute+mb4+bf16": {"precompute_ref_log_probs": True, "micro_batch_size": 4, "bf16": True},
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    """The demo preset's `dpo` section with the bench's batch, length and dropout."""
    from selfreward.config import load_config

    overrides = {"batch_size": args.batch_size, "max_length": args.max_length, "dropout": args.dropout}
    return {**load_config("demo").dpo.model_dump(mode="json"), **{k: v for k, v in overrides.items() if v is not None}}


def candidate_pairs(pairs_file: Path | None) -> list[dict[str, str]] | None:
    """Rows of `pairs_file`, or best-vs-worst pairs of the shared oasst1 groups (None when absent)."""
    from selfreward.records import read_jsonl
    from selfreward.seed_data import load_ranked

    if pairs_file is not None:
        return [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in read_jsonl(pairs_file)]
    if not OASST1_VALIDATION_GROUPS.is_file():
        return None
    groups = load_ranked([str(OASST1_VALIDATION_GROUPS)])[0]
    return [{"prompt": g.prompt, "chosen": g.responses[0].text, "rejected": g.responses[-1].text} for g in groups]


def fitting_pairs(candidates: list[dict[str, str]], model: str, max_length: int, count: int) -> list[dict[str, str]]:
    """The first `count` pairs whose prompt + answer fit `max_length` tokens (the rest the stage would drop)."""
    from selfreward.models import load_tokenizer
    from selfreward.training import fits_length

    tokenizer = load_tokenizer(model, max_length)
    fitting = (p for p in candidates if fits_length(tokenizer, p["prompt"], [p["chosen"], p["rejected"]], max_length))
    return [p for _, p in zip(range(count), fitting, strict=False)]


def train_one(model: str, config_json: str, pairs_file: Path, seed: int, workdir: Path) -> dict[str, Any]:
    """In the child: the stage's own training on `pairs_file`; times, step losses, peak RSS."""
    import torch
    import trl

    from selfreward.config import DPOTrainingConfig, ModelConfig
    from selfreward.stages.dpo import TrainDPO

    figures: dict[str, Any] = {"threads": torch.get_num_threads()}

    class TimedDPOTrainer(trl.DPOTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            super().__init__(*args, **kwargs)
            figures["init_s"] = time.perf_counter() - started

        def train(self, *args: Any, **kwargs: Any) -> Any:
            output = super().train(*args, **kwargs)
            figures["train_s"] = output.metrics["train_runtime"]
            figures["losses"] = [h["loss"] for h in self.state.log_history if "loss" in h]
            return output

    trl.DPOTrainer = TimedDPOTrainer  # type: ignore[misc]  # train_here imports it from trl at call time
    config = DPOTrainingConfig.model_validate_json(config_json)
    stats = TrainDPO(
        "dpo",
        ModelConfig(name_or_path=model, device="cpu"),
        config,
        model,
        None,
        pairs_file,
        workdir / "dpo",
        workdir / "model",
        seed,
    ).train_here()
    return {**figures, "pairs": stats["pairs"], "bf16": stats["bf16"], "peak_rss_mb": peak_rss_mb()}


def run_setup(name: str, model: str, config: dict[str, Any], pairs_file: Path, seed: int) -> dict[str, Any]:
    """`train_one` for setup `name` in a fresh Python process."""
    command = [
        sys.executable,
        __file__,
        "--child",
        json.dumps(config),
        "--model",
        model,
        "--pairs",
        str(pairs_file),
        "--seed",
        str(seed),
    ]
    child = subprocess.run(command, capture_output=True, text=True, check=False)
    if child.returncode != 0:
        sys.exit(f"setup {name} failed:\n{child.stderr[-3000:]}")
    return dict(json.loads(child.stdout.strip().splitlines()[-1]))


def loss_text(losses: list[float]) -> str:
    return " ".join(f"{v:.5f}" for v in losses[:2]) + (
        f" ... mean {sum(losses) / len(losses):.5f}" if len(losses) > 2 else ""
    )


def per_pair(result: dict[str, Any]) -> float:
    return (result["init_s"] + result["train_s"]) / result["pairs"]


def print_row(name: str, result: dict[str, Any], today: dict[str, Any]) -> float:
    """One setup's row (printed as soon as it ran); returns its largest step-loss difference from today's."""
    diff = max((abs(a - b) for a, b in zip(result["losses"], today["losses"], strict=True)), default=math.nan)
    seconds = per_pair(result)
    print(
        f"{name:<22}{seconds:>8.2f}{seconds / per_pair(today):>9.2f}{result['init_s']:>8.1f}{result['train_s']:>9.1f}"
        f"{result['peak_rss_mb']:>8.0f}  {diff:>11.2e}  {loss_text(result['losses'])}",
        flush=True,
    )
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="model id, directory or the embedded smollm2-135m-instruct"
    )
    parser.add_argument(
        "--pairs", type=Path, help="a pairs.jsonl (prompt, chosen, rejected); default: oasst1 groups in ../shared/data"
    )
    parser.add_argument("--count", type=int, default=32, help="pairs to train on")
    parser.add_argument(
        "--setups", default=",".join(SETUPS), help=f"comma-separated, from: {', '.join(SETUPS)} (today always runs)"
    )
    parser.add_argument("--batch-size", type=int, help="effective batch (default: the demo's dpo.batch_size)")
    parser.add_argument(
        "--max-length", type=int, help="tokens per prompt + answer (default: the demo's dpo.max_length)"
    )
    parser.add_argument("--dropout", type=float, default=0.0, help="training dropout in every setup")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="largest step-loss difference from today's that counts as the same",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(train_one(args.model, args.child, args.pairs, args.seed, Path(tmp))))
        return
    from selfreward.models import resolve_model

    unknown = set(args.setups.split(",")) - set(SETUPS)
    if unknown:
        sys.exit(f"unknown setups {', '.join(sorted(unknown))} (known: {', '.join(SETUPS)})")
    base = base_config(args)
    model = resolve_model(args.model)
    candidates = candidate_pairs(args.pairs)
    if candidates is None:
        print(f"skipped: {OASST1_VALIDATION_GROUPS} is missing (pass --pairs FILE)")
        return
    pairs = fitting_pairs(candidates, model, base["max_length"], args.count)
    if not pairs:
        sys.exit(f"no pair fits max_length={base['max_length']} tokens")
    names = ["today", *[n for n in SETUPS if n in args.setups.split(",") and n != "today"]]
    print(
        f"DPO on {args.model}: {len(pairs)} pairs, batch {base['batch_size']}, dropout {base['dropout']}, seed {args.seed}"
    )
    print(
        f"{'setup':<22}{'s/pair':>8}{'x today':>9}{'init s':>8}{'train s':>9}{'RSS MB':>8}  {'max |dloss|':>11}  step losses",
        flush=True,
    )
    correct: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = Path(tmp) / "pairs.jsonl"
        pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
        today: dict[str, Any] = {}
        for name in names:
            config = {**base, **SETUPS[name]}
            if base["batch_size"] % config["micro_batch_size"]:
                print(
                    f"{name}: skipped, micro batch {config['micro_batch_size']} does not divide batch {base['batch_size']}"
                )
                continue
            result = run_setup(name, model, config, pairs_file, args.seed)
            today = today or result
            if print_row(name, result, today) <= args.tolerance:
                correct[name] = per_pair(result)
    best = min(correct, key=correct.__getitem__)
    print(
        f"{today['threads']} torch threads; correct: max |loss - today's| <= {args.tolerance:g} at every step; best correct setup: {best}"
    )
    print(f"dpo s/pair: {per_pair(today):.2f} -> {correct[best]:.2f}")


if __name__ == "__main__":
    main()
