"""Which DPO learning rate, epochs and pairs per iteration make DPO learn at demo scale?

    python bench/dpo_sweep.py --model M1_DIR --pairs ITER/pairs.jsonl --out DIR
        [--validation 16] [--lr 1e-6 5e-6 2e-5] [--epochs 1 2] [--train-pairs 16 32] [--set dpo.key=value ...]

The pairs (an AIFT run of the model, e.g. `selfreward aift --model M1 --set prompts.num_prompts=64`)
are split once by a seeded hash of their ids into --validation held-out pairs and a training pool.
Each setting trains DPO from the model on the first N pairs of the pool (the demo preset's DPO
otherwise, `--set` changes it) and is measured on the held-out pairs by the run's own validation
stage (selfreward.stages.dpo_validation): implicit-reward accuracy and margin before and after,
with 95% intervals, and the paired change. Choose by these, never by IFEval. Rows are kept in
DIR/results.jsonl (a setting already there is not trained again) and printed as one table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from selfreward.config import load_config
from selfreward.intervals import describe
from selfreward.models import resolve_model
from selfreward.records import read_jsonl, write_jsonl
from selfreward.stages.dpo import TrainDPO, split_pairs
from selfreward.stages.dpo_validation import validate_dpo
from selfreward.steps import run_step


def setting_name(lr: float, epochs: float, pairs: int) -> str:
    return f"lr{lr:g}-ep{epochs:g}-n{pairs}"


def run_setting(
    args: argparse.Namespace, lr: float, epochs: float, count: int, pool: list[dict[str, Any]], validation: Path
) -> dict[str, Any]:
    config = load_config(
        "demo",
        [
            *args.overrides,
            f"dpo.learning_rate={lr}",
            f"dpo.final_learning_rate={lr / 10}",
            f"dpo.epochs={epochs}",
            "dpo.eval_fraction=0",
        ],
    )
    name = setting_name(lr, epochs, count)
    stage = args.out / name
    write_jsonl(stage / "pairs.jsonl", pool[:count])
    model = resolve_model(args.model)
    started = time.perf_counter()
    trained = run_step(
        TrainDPO("dpo", config.model, config.dpo, model, None, stage / "pairs.jsonl", stage / "dpo", stage / "model", 0)
    )
    seconds = time.perf_counter() - started
    checked = validate_dpo(config.model, config.dpo, model, str(stage / "model"), None, validation, stage, seed=0)
    return {
        "name": name,
        "lr": lr,
        "epochs": epochs,
        "train_pairs": trained["pairs"],
        "steps": trained["steps"],
        "train_seconds": round(seconds, 1),
        "train_loss": trained.get("train_loss"),
        "train_reward_accuracy": trained.get("reward_accuracies_mean"),
        "validation_pairs": checked["pairs"],
        "before": checked["before"],
        "after": checked["after"],
        "change": checked["change"],
        "verdict": checked["verdict"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="the model DPO starts from (M_t)")
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--validation", type=int, default=16, help="held-out pairs")
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-6, 5e-6, 2e-5])
    parser.add_argument("--epochs", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--train-pairs", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="dpo.key=value for every setting")
    args = parser.parse_args()
    pairs = read_jsonl(args.pairs)
    fraction = args.validation / len(pairs)
    split_config = load_config("demo", [f"dpo.eval_fraction={fraction}", f"dpo.min_eval_pairs={args.validation}"]).dpo
    pool, held = split_pairs(pairs, split_config, seed=0)
    write_jsonl(args.out / "validation_pairs.jsonl", held)
    print(f"{len(pairs)} pairs: {len(held)} held out for validation, {len(pool)} to train on")
    results = args.out / "results.jsonl"
    rows = read_jsonl(results) if results.exists() else []
    for count in args.train_pairs:
        for epochs in args.epochs:
            for lr in args.lr:
                if count > len(pool) or any(r["name"] == setting_name(lr, epochs, count) for r in rows):
                    continue
                rows.append(run_setting(args, lr, epochs, count, pool, args.out / "validation_pairs.jsonl"))
                results.write_text("".join(json.dumps(r) + "\n" for r in rows))
                print_row(rows[-1], flush=True)
    print(
        "\n| setting | train pairs | steps | train s | train reward acc | val acc before % | val acc after % | change (points) | val margin after | verdict |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print_row(row)


def print_row(r: dict[str, Any], flush: bool = False) -> None:
    print(
        f"| {r['name']} | {r['train_pairs']} | {r['steps']} | {r['train_seconds']:.0f} | {r['train_reward_accuracy']} | {describe(r['before']['accuracy'])} | "
        f"{describe(r['after']['accuracy'])} | {describe(r['change']['accuracy'], signed=True)} | {describe(r['after']['margin'], scale=1.0, digits=3)} | {r['verdict']} |",
        flush=flush,
    )


if __name__ == "__main__":
    main()
