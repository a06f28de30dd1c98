"""Which SFT makes M1 a judge without overwriting the seed model? Held-out measures per setting.

    python bench/m1_sft.py RUN_DIR --name NAME [--set sft.key=value ...] [--max-groups 40]

RUN_DIR is a demo run past its EFT stage (`selfreward run --set loop.iterations=0` makes one, with
M1 trained by the preset's own setting). Each setting trains M1 anew from M0 on the run's own
IFT + EFT examples (`--set sft.m1_with_ift=false`: EFT only; `--set sft.m1_self_distill=true`: the IFT
prompts answered by M0 itself, cached in RUN_DIR/bench/m1/self_distill; `--set sft.m1_epochs=1.5`: how
long) into RUN_DIR/bench/m1/NAME, then measures, never on IFEval:
- IFT validation loss: per-token NLL of the human answers of the demo IFT examples the run did not
  train on (`data.max_ift` leaves them out);
- retention: per-token NLL of M0's own greedy answers to those prompts (M0 itself is the floor; how
  far SFT moved the model away from what it already did);
- the judge: parse rate with no fallback and pairwise accuracy (95% interval) on the run's held-out
  EFT groups and on the first --max-groups oasst1 validation groups in ../shared/data, one judgment each.
Every setting's row is kept in RUN_DIR/bench/m1/results.jsonl; the table of all of them is printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from shared_data import OASST1_VALIDATION_GROUPS

from selfreward.answers import generate_answers
from selfreward.batches import derive_seed
from selfreward.config import Config, load_config
from selfreward.engines import Sampling, make_engine
from selfreward.eval.rm import evaluate_rm
from selfreward.eval.runner import rm_sets
from selfreward.intervals import describe
from selfreward.logprobs import score_with_model
from selfreward.models import resolve_model
from selfreward.overlap import disjoint_training_data
from selfreward.recipes.self_rewarding import m1_ift_examples, self_distill
from selfreward.records import read_json, read_jsonl, write_json
from selfreward.seed_data import load_ift, load_ranked
from selfreward.stages.sft import TrainSFT
from selfreward.steps import run_step


def training_examples(config: Config, run_dir: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(M1's training examples as the pipeline builds them, the demo IFT examples it leaves out)."""
    ift, _ = load_ift(config.data.ift, config.data.lang)
    data = disjoint_training_data(config, ift, load_ranked(config.data.ranked, config.data.lang)[0])
    used = {e.prompt for e in data.ift}
    eft = [(e["prompt"], e["completion"]) for e in read_jsonl(run_dir / "eft" / "train.jsonl")]
    held_out = [(e.prompt, e.response) for e in ift if e.prompt not in used]
    distill_dir = run_dir / "bench" / "m1" / "self_distill"
    if config.sft.m1_self_distill and not (distill_dir / "self_distill.stats.json").exists():
        run_step(self_distill(config, data, resolve_model(config.model.name_or_path), distill_dir), config)
    return m1_ift_examples(config, data, distill_dir) + eft, held_out


def per_token_nll(config: Config, model: str, items: list[tuple[str, str]]) -> float:
    scored = score_with_model(config.model, model, items, config.model.max_length)
    return round(-sum(s.logp for s in scored) / sum(s.tokens for s in scored), 4)


def seed_answers(config: Config, run_dir: Path, prompts: list[str]) -> list[tuple[str, str]]:
    """M0's greedy answers to the held-out prompts (cached in RUN_DIR/bench/m1/M0-answers.jsonl)."""
    engine = make_engine(config, resolve_model(config.model.name_or_path))
    try:
        rows = [{"id": f"h{i:03d}", "prompt": p} for i, p in enumerate(prompts)]
        found = generate_answers(
            engine, rows, run_dir / "bench" / "m1", "M0-answers", Sampling(0.0, 1.0, 320), 0, config.engine.batch_size
        )
    finally:
        engine.close()
    return [(r["prompt"], found[r["id"]]["text"]) for r in rows]


def judge_figures(config: Config, run_dir: Path, model: Path, name: str, max_groups: int) -> dict[str, Any]:
    judged = config.model_copy(
        update={
            "judge": config.judge.model_copy(update={"fallback": "off"}),
            "eval": config.eval.model_copy(
                update={"rm_samples": 1, "ranked": [str(OASST1_VALIDATION_GROUPS)], "rm_max_groups": max_groups}
            ),
        }
    )
    sets = rm_sets(run_dir, judged)
    engine = make_engine(judged, str(model))
    try:
        return {
            set_name: evaluate_rm(
                judged,
                engine,
                groups,
                run_dir / "bench" / "m1" / "rm" / set_name,
                name,
                derive_seed(0, f"m1-rm-{set_name}"),
            )
            for set_name, groups in sets.items()
        }
    finally:
        engine.close()


def measure(
    config: Config, run_dir: Path, name: str, model: Path, held_out: list[tuple[str, str]], max_groups: int
) -> dict[str, Any]:
    retention_items = seed_answers(config, run_dir, [p for p, _ in held_out])
    judge = judge_figures(config, run_dir, model, name, max_groups)
    return {
        "ift_val_nll": per_token_nll(config, str(model), held_out),
        "m0_answer_nll": per_token_nll(config, str(model), retention_items),
        "judge": {
            s: {
                "parse_rate": f["judge_parse_rate"],
                "pairwise_accuracy": f["pairwise_accuracy_ci"],
                "groups": f["groups"],
            }
            for s, f in judge.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--name", required=True, help="the setting's name (M0 measures the seed model, M1 the run's own M1)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="sft.key=value changes of the run's config"
    )
    parser.add_argument("--max-groups", type=int, default=40)
    args = parser.parse_args()
    config = load_config(str(args.run_dir / "config.yaml"), args.overrides)
    examples, held_out = training_examples(config, args.run_dir)
    out = args.run_dir / "bench" / "m1" / args.name
    started = time.perf_counter()
    if args.name == "M0":
        model, seconds = Path(resolve_model(config.model.name_or_path)), 0.0
    elif args.name == "M1":
        model, seconds = (
            args.run_dir / "models" / "M1",
            read_json(args.run_dir / "sft" / "sft.stats.json").get("seconds", 0.0),
        )
    else:
        stats = run_step(
            TrainSFT(
                "sft",
                config.model,
                config.sft.for_m1(),
                resolve_model(config.model.name_or_path),
                examples,
                out / "sft",
                out / "model",
                derive_seed(config.seed, "sft"),
            )
        )
        model, seconds = out / "model", stats["seconds"]
    row = {
        "name": args.name,
        "overrides": args.overrides,
        "ift": config.sft.m1_with_ift,
        "examples": len(examples),
        "sft_seconds": seconds,
    }
    row |= measure(config, args.run_dir, args.name, model, held_out, args.max_groups)
    row["seconds"] = round(time.perf_counter() - started, 1)
    results = args.run_dir / "bench" / "m1" / "results.jsonl"
    rows = [r for r in (read_jsonl(results) if results.exists() else []) if r["name"] != args.name] + [row]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_json(out / "stats.json", row)
    print_table(rows)


def print_table(rows: list[dict[str, Any]]) -> None:
    sets = sorted({s for r in rows for s in r["judge"]})
    print(
        "| setting | examples | SFT s | IFT val NLL | M0-answer NLL | "
        + " | ".join(f"parse {s} | pairwise acc {s}" for s in sets)
        + " |"
    )
    print("|---|---|---|---|---|" + "---|---|" * len(sets))
    for r in rows:
        cells = [
            f"{r['judge'][s]['parse_rate']:.1%} | {describe(r['judge'][s]['pairwise_accuracy'])}"
            if s in r["judge"]
            else "- | -"
            for s in sets
        ]
        print(
            f"| {r['name']} {' '.join(r['overrides'])}{'' if r['ift'] else ' (EFT only)'} | {r['examples']} | {r['sft_seconds']:.0f} | {r['ift_val_nll']:.3f} | {r['m0_answer_nll']:.3f} | "
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()
