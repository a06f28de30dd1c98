"""How well the judge of M0, the SFT baseline and M1 of a run works (issue: a judge the demo model can learn).

    python bench/judge_quality.py RUN_DIR [--ranked FILE] [--max-groups N]

For each model, on human-ranked groups (default: the oasst1 English validation first-turn groups
in ../shared/data): the judge parse rate with no fallback, and reward-model pairwise accuracy,
Spearman and Kendall tau (selfreward.eval.rm). Then AIFT(M1)'s pair yield and score histogram
from RUN_DIR/iter1. Results go to RUN_DIR/eval/ and are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from shared_data import OASST1_VALIDATION_GROUPS

from selfreward.config import load_config
from selfreward.eval.runner import evaluate_run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--ranked", default=str(OASST1_VALIDATION_GROUPS))
    parser.add_argument("--max-groups", type=int, default=None)
    parser.add_argument("--models", nargs="*", default=["sft_baseline", "M1"])
    args = parser.parse_args()
    overrides = ["judge.fallback=off", f"eval.ranked=[{args.ranked}]"]
    if args.max_groups:
        overrides.append(f"eval.rm_max_groups={args.max_groups}")
    config = load_config(str(args.run_dir / "config.yaml"), overrides)
    # the same settings as `selfreward eval RUN_DIR --with-seed --set judge.fallback=off --set eval.ranked=[...]`:
    # results cached by that command are reused
    summary = evaluate_run(args.run_dir, config, Console(), args.models, head_to_head=False, with_seed=True)
    set_name = Path(args.ranked).stem
    print(f"\nreward modelling on {set_name} (judge.fallback=off, {config.eval.rm_samples} judgment(s) per response)\n")
    print("| model | groups | judge parse rate | pairwise acc | Spearman | Kendall tau | exact match |")
    print("|---|---|---|---|---|---|---|")
    for model in ["M0", *args.models]:
        sets = summary["rm"][model]
        m = sets[set_name]
        print(
            f"| {model} | {m['groups']} | {m['judge_parse_rate']:.1%} | {m['pairwise_accuracy']:.1%} | {m['spearman']:.3f} | {m['kendall_tau']:.3f} | {m['exact_match']:.1%} |"
        )
    pairs_stats = args.run_dir / "iter1" / "pairs.stats.json"
    if pairs_stats.exists():
        pairs = json.loads(pairs_stats.read_text())
        judged = json.loads((args.run_dir / "iter1" / "judgments.stats.json").read_text())
        hist = judged["score_histogram"]
        top = max(hist.values()) / max(1, sum(hist.values()))
        print(
            f"\nAIFT(M1): {pairs['pairs']} pairs from {pairs['prompts']} prompts (yield {pairs['pair_yield']:.0%}); "
            f"judge parse rate {judged['parse_rate_text']:.0%} (score source {judged['score_source']}); "
            f"score histogram 0-5 {list(hist.values())}, top score share {top:.0%}"
        )


if __name__ == "__main__":
    main()
