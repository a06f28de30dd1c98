"""Which IFEval instructions one model passes and another fails, on the same prompts.

    python bench/ifeval_changes.py RUN_DIR --base M0 --model M1 [--prompts input_data.jsonl] [--top 10]

Reads RUN_DIR/eval/ifeval/{BASE,MODEL}.scores.jsonl (written by `selfreward ifeval`) and the prompts
file they were scored on (for each prompt's instruction ids); prints, per instruction id, how many
instructions (strict) the model lost against the base and how many it gained, most lost first.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from shared_data import SHARED_DATA

from selfreward.records import read_jsonl


def changes(base: list[dict], model: list[dict], prompts: list[dict]) -> tuple[Counter[str], Counter[str]]:
    """(lost, gained) counts per instruction id: passed by one and failed by the other, strict."""
    ids = {p["key"]: p["instruction_id_list"] for p in prompts}
    by_key = {r["key"]: r for r in model}
    lost: Counter[str] = Counter()
    gained: Counter[str] = Counter()
    for b in base:
        m = by_key[b["key"]]
        for instruction, was, now in zip(ids[b["key"]], b["inst_strict"], m["inst_strict"], strict=True):
            lost[instruction] += was and not now
            gained[instruction] += now and not was
    return lost, gained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--base", default="M0")
    parser.add_argument("--model", default="M1")
    parser.add_argument("--prompts", type=Path, default=SHARED_DATA / "ifeval" / "input_data.jsonl")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    scores = args.run_dir / "eval" / "ifeval"
    lost, gained = changes(
        read_jsonl(scores / f"{args.base}.scores.jsonl"),
        read_jsonl(scores / f"{args.model}.scores.jsonl"),
        read_jsonl(args.prompts),
    )
    print(f"| instruction | lost by {args.model} | gained by {args.model} |")
    print("|---|---|---|")
    for instruction in sorted(lost | gained, key=lambda i: (gained[i] - lost[i], i))[: args.top]:
        print(f"| {instruction} | {lost[instruction]} | {gained[instruction]} |")
    print(f"| all | {sum(lost.values())} | {sum(gained.values())} |")


if __name__ == "__main__":
    main()
