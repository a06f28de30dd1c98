"""Which judge should a small model be? Every judge option on human-ranked groups, with 95% intervals.

    python bench/judge_options.py --out DIR --judge M1_DIR --implicit M1_DIR:M0_DIR --implicit M2_DIR:M1_DIR
        [--ranked FILE] [--max-groups N]

Options, each scoring every response of the groups (default: all oasst1 English validation groups
in ../shared/data; the judge sees the group's last user turn):
- `text`: the judge model's written judgment (additive 5-point prompt, one per response, sampled as
  the run's judge), its `Score: N` (no score: a tie);
- `expected`: the expected digit after `Score:` appended to that same judgment (`judge.fallback: always`);
- `implicit P|R` and `implicit P|R per token`: beta * (log P(y|x) - log R(y|x)), whole or per answer
  token (`judge.kind: implicit`), for each --implicit POLICY:REFERENCE pair;
- `longer answer` (a reference, not a judge): the answer's length in characters.
Reward-modelling metrics (selfreward.eval.rm: ties count half), pairwise accuracy and Spearman with
95% bootstrap intervals over groups, and each option's pairwise accuracy minus `text`'s on the same
groups. Judgments and log-probabilities are cached in DIR (resumable).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shared_data import OASST1_VALIDATION_GROUPS

from selfreward.config import Config, load_config
from selfreward.engines import make_engine
from selfreward.eval.rm import judge_groups, rm_metrics
from selfreward.intervals import describe, paired_difference_ci
from selfreward.logprobs import Scored, implicit_rewards, score_with_model
from selfreward.overlap import group_rows
from selfreward.records import StageFiles, read_jsonl, write_jsonl
from selfreward.seed_data import load_ranked

Table = list[tuple[list[float], list[float | None]]]


def written_scores(
    config: Config, judge: str, groups: list[dict[str, Any]], out: Path
) -> dict[str, list[list[float | None]]]:
    """`text` and `expected` scores of one judgment per response by the `judge` model."""
    files = StageFiles(out, "judgments")
    if files.done():
        records = files.read()
    else:
        engine = make_engine(config, judge)
        try:
            records = judge_groups(config, engine, groups, files, "judge", 0)
        finally:
            engine.close()
    by_response = {(r["group_id"], r["response_index"]): r for r in records}
    found: dict[str, list[list[float | None]]] = {"text": [], "expected": []}
    for g in groups:
        judged = [by_response[(g["id"], i)] for i in range(len(g["responses"]))]
        found["text"].append([j["text_score"] for j in judged])
        found["expected"].append([j["digit_probs"]["expected"] if j.get("digit_probs") else None for j in judged])
    return found


def logprobs(config: Config, model: str, groups: list[dict[str, Any]], out: Path) -> list[Scored]:
    """Every response's log-probability under `model` (cached as OUT/logps/<dir name>.jsonl)."""
    path = out / "logps" / f"{Path(model).name}.jsonl"
    if path.exists():
        return [Scored(r["logp"], r["tokens"]) for r in read_jsonl(path)]
    items = [(g["prompt"], r["text"]) for g in groups for r in g["responses"]]
    scored = score_with_model(config.model, model, items, 4096)
    write_jsonl(path, [{"logp": s.logp, "tokens": s.tokens} for s in scored])
    return scored


def per_group(groups: list[dict[str, Any]], flat: list[float]) -> list[list[float | None]]:
    out, i = [], 0
    for g in groups:
        out.append(list(flat[i : i + len(g["responses"])]))
        i += len(g["responses"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--judge", required=True, help="the model whose written judgments are `text` and `expected`")
    parser.add_argument("--implicit", action="append", default=[], help="POLICY_DIR:REFERENCE_DIR (repeatable)")
    parser.add_argument("--ranked", default=str(OASST1_VALIDATION_GROUPS))
    parser.add_argument("--max-groups", type=int, default=None)
    args = parser.parse_args()
    config = load_config("demo", ["judge.fallback=always", "eval.rm_samples=1"])
    groups = group_rows(load_ranked([args.ranked], config.data.lang)[0])[: args.max_groups]
    options = written_scores(config, args.judge, groups, args.out)
    for pair in args.implicit:
        policy, reference = pair.split(":")
        label = f"implicit {Path(policy).name}|{Path(reference).name}"
        p, r = logprobs(config, policy, groups, args.out), logprobs(config, reference, groups, args.out)
        options[label] = per_group(groups, implicit_rewards(p, r, config.judge.beta))
        options[f"{label} per token"] = per_group(groups, implicit_rewards(p, r, config.judge.beta, per_token=True))
    options["longer answer"] = [[float(len(resp["text"])) for resp in g["responses"]] for g in groups]
    ranks = [[resp["rank"] for resp in g["responses"]] for g in groups]
    print(
        f"\n{len(groups)} groups, {sum(len(r) for r in ranks)} responses of {Path(args.ranked).name}; judge {args.judge}\n"
    )
    print(
        "| judge option | pairwise acc % [95% CI] | tie rate | Spearman [95% CI] | Kendall tau | vs text (points) [95% CI] |"
    )
    print("|---|---|---|---|---|---|")
    base = None
    for name, scores in options.items():
        metrics = rm_metrics(list(zip(ranks, scores)))
        agreement = metrics["group_agreement"]
        base = base or agreement
        change = (
            paired_difference_ci([a for a, _ in agreement], [a for a, _ in base], [n for _, n in agreement])
            if agreement is not base
            else None
        )
        print(
            f"| {name} | {describe(metrics['pairwise_accuracy_ci'])} | {metrics['tie_rate']:.1%} | {describe(metrics['spearman_ci'], scale=1.0, digits=3)} | "
            f"{metrics['kendall_tau']:.3f} | {describe(change, signed=True) if change else '-'} |"
        )


if __name__ == "__main__":
    main()
