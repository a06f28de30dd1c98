"""Stage `meta`: the meta-judge of Meta-Rewarding (arXiv 2407.19594), judge-preference pairs.

Per prompt, the candidate whose judgments (those with a text score) vary most (population
standard deviation; the first candidate on equal spread; none when they all agree) is meta-judged:
every two of its judgments are shown to the current model in both orders (A/B, then B/A) with the
`meta.template` prompt, which ends with `Winner: A` or `Winner: B`. A judgment wins a comparison
when both orders name it; the orders disagreeing, or an unparsable verdict, is a tie (unparsable
verdicts are counted, never a win). Judgments are ranked by wins minus losses; the best against
the worst (first in judgment order on equal counts; no pair when they are level or their texts
are the same) is a judge pair: the judge prompt, chosen = the better judgment, rejected = the
worse, `kind: judge`. Judge pairs are added to pairs.jsonl, at most `meta.fraction` of the file
(those with the largest wins-minus-losses gap first); actor pairs are left as they are.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any, ClassVar

from selfreward.batches import WorkItem, mean
from selfreward.config import Config, JudgeConfig, MetaConfig
from selfreward.engines.base import Completion, Engine, Sampling
from selfreward.errors import SelfRewardError
from selfreward.judging import point_judgment, scale_named
from selfreward.judging.prompt import template_with
from selfreward.judging.responses import JudgeItem, judge_prompt, judge_responses
from selfreward.judging.scale import Scale
from selfreward.records import StageFiles, write_jsonl
from selfreward.stage_inputs import CandidateRecord, JudgmentRecord, PairRecord, judgments_by_candidate, read_records
from selfreward.steps import AIFTStep, Column, Iteration, Tools

WINNER_RE = re.compile(r"^[ \t>#*_]*winner[ \t*_]*[:=][ \t*_\"'\[(]*(A|B)\b", re.IGNORECASE | re.MULTILINE)
FIELDS = ("instruction", "response", "judgment_a", "judgment_b")


def parse_winner(text: str) -> str | None:
    """'A' or 'B' from the last line starting `Winner: ...`, or None."""
    matches = WINNER_RE.findall(text or "")
    return matches[-1].upper() if matches else None


def meta_template(name_or_path: str) -> str:
    return template_with(name_or_path, FIELDS)


@dataclass(frozen=True)
class Disputed:
    """The candidate of one prompt whose scored judgments vary most."""

    candidate: dict[str, Any]
    judgments: list[dict[str, Any]]
    spread: float


def most_disputed(
    candidates: list[dict[str, Any]], by_candidate: dict[str, list[dict[str, Any]]]
) -> tuple[list[Disputed], Counter[str]]:
    """Per prompt (in candidate order), its candidate with the largest spread of text scores, and
    counts of prompts left out and why."""
    by_prompt: dict[str, list[Disputed]] = defaultdict(list)
    for c in candidates:
        own = [j for j in by_candidate.get(c["id"], []) if j.get("text_score") is not None]
        by_prompt[c["prompt_id"]].append(
            Disputed(c, own, statistics.pstdev([j["text_score"] for j in own]) if len(own) > 1 else 0.0)
        )
    chosen, skipped = [], Counter[str]()
    for options in by_prompt.values():
        if max(len(d.judgments) for d in options) < 2:
            skipped["fewer_than_2_scored_judgments"] += 1
            continue
        best = max(options, key=lambda d: d.spread)
        if best.spread == 0:
            skipped["judgments_agree"] += 1
        else:
            chosen.append(best)
    return chosen, skipped


def comparison_items(disputed: Disputed) -> list[JudgeItem]:
    """Every two judgments of the candidate, in both orders."""
    c, items = disputed.candidate, []
    for first, second in combinations(disputed.judgments, 2):
        for a, b in ((first, second), (second, first)):
            fields = {
                "instruction": c["prompt"],
                "response": c["text"],
                "judgment_a": a["text"],
                "judgment_b": b["text"],
            }
            payload = {
                "prompt_id": c["prompt_id"],
                "candidate_id": c["id"],
                "pair": f"{first['id']}|{second['id']}",
                "shown_a": a["id"],
                "shown_b": b["id"],
            }
            items.append(JudgeItem(f"{a['id']}-vs-{b['id']}", fields, payload))
    return items


@dataclass(frozen=True)
class WinnerJudgment:
    """The meta-judge's verdict: `Winner: A` or `Winner: B` between two judgments of one response."""

    template: str
    shorten: tuple[str, ...] = ("response",)
    stop: tuple[str, ...] = ()

    def rows(self, engine: Engine, items: list[WorkItem], completions: list[Completion]) -> list[dict[str, Any]]:
        rows = []
        for item, completion in zip(items, completions):
            winner = parse_winner(completion.text)
            winner_id = {"A": item.payload["shown_a"], "B": item.payload["shown_b"]}.get(winner or "")
            rows.append(
                {
                    "id": item.id,
                    **item.payload,
                    "text": completion.text,
                    "num_tokens": completion.num_tokens,
                    "winner": winner,
                    "winner_id": winner_id,
                }
            )
        return rows


def outcomes(verdicts: list[dict[str, Any]]) -> tuple[dict[str, str | None], Counter[str]]:
    """The winner of each compared pair of judgments (None: a tie), and how the orders compared."""
    by_pair: dict[str, list[str | None]] = defaultdict(list)
    for v in verdicts:
        by_pair[v["pair"]].append(v["winner_id"])
    winners: dict[str, str | None] = {}
    counts: Counter[str] = Counter()
    for pair, (one, other) in by_pair.items():
        kind = "unparsable" if one is None or other is None else ("agree" if one == other else "disagree")
        counts[kind] += 1
        winners[pair] = one if kind == "agree" else None
    return winners, counts


def net_wins(disputed: Disputed, winners: dict[str, str | None]) -> dict[str, int]:
    """Wins minus losses of each judgment of the candidate, in judgment order."""
    net = {j["id"]: 0 for j in disputed.judgments}
    for first, second in combinations(disputed.judgments, 2):
        winner = winners.get(f"{first['id']}|{second['id']}")
        if winner is not None:
            loser = second["id"] if winner == first["id"] else first["id"]
            net[winner] += 1
            net[loser] -= 1
    return net


def judge_pair(disputed: Disputed, net: dict[str, int], judge_prompt: str) -> tuple[dict[str, Any] | None, str | None]:
    """The best- against the worst-ranked judgment, or why there is none."""
    by_id = {j["id"]: j for j in disputed.judgments}
    best, worst = max(net, key=lambda i: net[i]), min(net, key=lambda i: net[i])
    if net[best] == net[worst]:
        return None, "no_preference"
    chosen, rejected = by_id[best], by_id[worst]
    if chosen["text"].strip() == rejected["text"].strip():
        return None, "identical_texts"
    return {
        "id": f"{disputed.candidate['prompt_id']}-judge",
        "kind": "judge",
        "prompt": judge_prompt,
        "chosen": chosen["text"],
        "rejected": rejected["text"],
        "chosen_id": best,
        "rejected_id": worst,
        "candidate_id": disputed.candidate["id"],
        "chosen_score": chosen["text_score"],
        "rejected_score": rejected["text_score"],
        "chosen_net_wins": net[best],
        "rejected_net_wins": net[worst],
    }, None


def judge_pair_cap(fraction: float, actor_pairs: int) -> int:
    """The most judge pairs that stay within `fraction` of actor + judge pairs."""
    share = Fraction(str(fraction))
    return int(share * actor_pairs / (1 - share))


def capped(pairs: list[dict[str, Any]], cap: int) -> list[dict[str, Any]]:
    """At most `cap` pairs, the largest wins-minus-losses gaps first, kept in their order."""
    ranked = sorted(
        range(len(pairs)), key=lambda i: (-(pairs[i]["chosen_net_wins"] - pairs[i]["rejected_net_wins"]), i)
    )
    keep = set(ranked[:cap])
    return [p for i, p in enumerate(pairs) if i in keep]


def judge_pairs(
    judge: JudgeConfig, engine: Engine, disputed: list[Disputed], winners: dict[str, str | None], skipped: Counter[str]
) -> list[dict[str, Any]]:
    """One judge pair per meta-judged candidate with a preference; the prompt is the judge request it was judged with."""
    judgment, pairs = point_judgment(judge), []
    for d in disputed:
        prompt = judge_prompt(
            engine,
            judgment,
            {"instruction": d.candidate["prompt"], "response": d.candidate["text"]},
            judge.max_new_tokens,
        )
        pair, reason = judge_pair(d, net_wins(d, winners), prompt)
        if pair is None:
            skipped[reason or "no_preference"] += 1
        else:
            pairs.append(pair)
    return pairs


def read_meta_inputs(out_dir: Path, scale: Scale) -> tuple[list[Disputed], Counter[str], list[dict[str, Any]], int]:
    """The candidates to meta-judge, counts of prompts left out, the actor pairs of pairs.jsonl and
    the number of judgments naming no candidate (left out), all checked (selfreward.stage_inputs)."""
    candidates, judgments, pairs = (StageFiles(out_dir, name) for name in ("candidates", "judgments", "pairs"))
    for needed in (candidates, judgments, pairs):
        if not needed.stats.exists():
            raise SelfRewardError(f"{needed.stats} not found: run the {needed.name} stage first")
    candidate_rows = read_records(candidates.records, CandidateRecord)
    judgment_rows = read_records(judgments.records, JudgmentRecord, (scale.lowest, scale.highest))
    by_candidate, orphans = judgments_by_candidate(candidate_rows, judgment_rows, judgments.records)
    disputed, skipped = most_disputed(candidate_rows, by_candidate)
    actor = [
        p for p in read_records(pairs.records, PairRecord) if p.get("kind") != "judge"
    ]  # a resumed stage replaces its own rows
    return disputed, skipped, actor, orphans


def run_meta_judge(
    config: MetaConfig, judge: JudgeConfig, load_engine: Callable[[], Engine], out_dir: Path, seed: int, batch_size: int
) -> dict[str, Any]:
    """Meta-judge each prompt's most disputed candidate and add judge pairs to pairs.jsonl (resumable;
    the inputs are checked before `load_engine` loads the model)."""
    files = StageFiles(out_dir, "meta")
    scale = scale_named(judge.scale)
    disputed, skipped, actor, orphans = read_meta_inputs(out_dir, scale)
    engine = load_engine()
    items = [item for d in disputed for item in comparison_items(d)]
    sampling = Sampling(config.temperature, config.top_p, config.max_new_tokens)
    run = judge_responses(
        engine,
        WinnerJudgment(meta_template(config.template)),
        items,
        1,
        sampling,
        files,
        seed,
        batch_size,
        "meta-judge",
    )
    winners, orders = outcomes(run.records)
    found = judge_pairs(judge, engine, disputed, winners, skipped)
    kept = capped(found, judge_pair_cap(config.fraction, len(actor)))
    write_jsonl(StageFiles(out_dir, "pairs").records, actor + kept)
    stats = meta_stats(scale, disputed, run.records, orders, skipped, found, kept, len(actor)) | {
        "judgments_without_candidate": orphans
    }
    files.finish(run.records, stats)
    return stats


def meta_stats(
    scale: Scale,
    disputed: list[Disputed],
    verdicts: list[dict[str, Any]],
    orders: Counter[str],
    skipped: Counter[str],
    found: list[dict[str, Any]],
    kept: list[dict[str, Any]],
    actor: int,
) -> dict[str, Any]:
    parsed = [v for v in verdicts if v["winner"] is not None]
    decided = orders["agree"] + orders["disagree"]
    return {
        "stage": "meta",
        "ranking": "wins_minus_losses",
        "prompts_meta_judged": len(disputed),
        "skipped": dict(sorted(skipped.items())),
        "mean_score_spread": mean([d.spread for d in disputed]),
        "comparisons": sum(orders.values()),
        "verdicts": len(verdicts),
        "unparsable_verdicts": len(verdicts) - len(parsed),
        "order_agreement": round(orders["agree"] / decided, 3) if decided else None,
        "order_disagreements": orders["disagree"],
        "first_position_win_rate": round(sum(v["winner"] == "A" for v in parsed) / len(parsed), 3) if parsed else None,
        "score_histogram": scale.histogram([j["text_score"] for d in disputed for j in d.judgments]),
        "chosen_score_histogram": scale.histogram([p["chosen_score"] for p in kept]),
        "rejected_score_histogram": scale.histogram([p["rejected_score"] for p in kept]),
        "judge_pairs_found": len(found),
        "judge_pairs": len(kept),
        "actor_pairs": actor,
        "judge_pair_share": round(len(kept) / (actor + len(kept)), 3) if actor + len(kept) else None,
    }


@dataclass(frozen=True)
class MetaJudge(AIFTStep):
    """The meta-judge compares M_t's judgments of each prompt's most disputed candidate -> ITER/meta.jsonl,
    judge pairs appended to ITER/pairs.jsonl."""

    name: str
    config: MetaConfig
    judge: JudgeConfig
    out_dir: Path
    model: str
    seed: int
    batch_size: int
    stage: ClassVar[str] = "meta"
    files: ClassVar[str] = "meta"
    columns: ClassVar[tuple[Column, ...]] = (
        Column("judge pairs", "judge_pairs"),
        Column("meta agreement", "order_agreement", "meta_order_agreement"),
    )

    @staticmethod
    def enabled(config: Config) -> bool:
        return config.meta.enabled

    @classmethod
    def build(cls, it: Iteration) -> MetaJudge:
        return cls(
            it.step_name("meta"), it.config.meta, it.config.judge, it.out_dir, it.model, it.seed("meta"), it.batch_size
        )

    def outputs(self) -> tuple[Path, ...]:
        return (self.out_dir / "meta.stats.json",)

    def run(self, tools: Tools) -> dict[str, Any]:
        return run_meta_judge(
            self.config, self.judge, partial(tools.engines.get, self.model), self.out_dir, self.seed, self.batch_size
        )
