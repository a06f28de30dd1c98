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
from itertools import combinations
from pathlib import Path
from typing import Any

from selfreward.config import JudgeConfig, MetaConfig
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.errors import SelfRewardError
from selfreward.prompts import fill, load_template
from selfreward.records import StageFiles, write_jsonl
from selfreward.stage_inputs import CandidateRecord, JudgmentRecord, PairRecord, judgments_by_candidate, read_records
from selfreward.stages.common import WorkItem, mean, run_batches
from selfreward.stages.judge import fitted_judge_request, judge_template, score_histogram

WINNER_RE = re.compile(r"^[ \t>#*_]*winner[ \t*_]*[:=][ \t*_\"'\[(]*(A|B)\b", re.IGNORECASE | re.MULTILINE)
FIELDS = ("{instruction}", "{response}", "{judgment_a}", "{judgment_b}")


def parse_winner(text: str) -> str | None:
    """'A' or 'B' from the last line starting `Winner: ...`, or None."""
    matches = WINNER_RE.findall(text or "")
    return matches[-1].upper() if matches else None


def meta_template(name_or_path: str) -> str:
    template = load_template(name_or_path)
    missing = [f for f in FIELDS if f not in template]
    if missing:
        raise SelfRewardError(f"meta template {name_or_path!r} lacks {' and '.join(missing)}")
    return template


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
        by_prompt[c["prompt_id"]].append(Disputed(c, own, statistics.pstdev([j["text_score"] for j in own]) if len(own) > 1 else 0.0))
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


def comparison_items(template: str, disputed: Disputed) -> list[WorkItem]:
    """Every two judgments of the candidate, in both orders."""
    c, items = disputed.candidate, []
    for first, second in combinations(disputed.judgments, 2):
        for a, b in ((first, second), (second, first)):
            text = fill(template, instruction=c["prompt"], response=c["text"], judgment_a=a["text"], judgment_b=b["text"])
            payload = {"prompt_id": c["prompt_id"], "candidate_id": c["id"], "pair": f"{first['id']}|{second['id']}", "shown_a": a["id"], "shown_b": b["id"]}
            items.append(WorkItem(f"{a['id']}-vs-{b['id']}", Request.user(text), payload))
    return items


def verdict_rows(items: list[WorkItem], completions: list[Completion]) -> list[dict[str, Any]]:
    rows = []
    for item, completion in zip(items, completions):
        winner = parse_winner(completion.text)
        winner_id = {"A": item.payload["shown_a"], "B": item.payload["shown_b"]}.get(winner or "")
        rows.append({"id": item.id, **item.payload, "text": completion.text, "num_tokens": completion.num_tokens, "winner": winner, "winner_id": winner_id})
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
    ranked = sorted(range(len(pairs)), key=lambda i: (-(pairs[i]["chosen_net_wins"] - pairs[i]["rejected_net_wins"]), i))
    keep = set(ranked[:cap])
    return [p for i, p in enumerate(pairs) if i in keep]


def fitting_items(template: str, disputed: list[Disputed], engine: Engine, max_new_tokens: int, skipped: Counter[str]) -> tuple[list[Disputed], list[WorkItem]]:
    """The comparisons to make; a candidate whose meta prompts do not fit the context is skipped and counted."""
    kept, items = [], []
    for d in disputed:
        own = comparison_items(template, d)
        if any((room := engine.context_room(it.request, max_new_tokens)) is not None and room < 0 for it in own):
            skipped["too_long"] += 1
            continue
        kept.append(d)
        items += own
    return kept, items


def judge_pairs(judge: JudgeConfig, engine: Engine, disputed: list[Disputed], winners: dict[str, str | None], skipped: Counter[str]) -> list[dict[str, Any]]:
    """One judge pair per meta-judged candidate with a preference; the prompt is the judge request it was judged with."""
    template, pairs = judge_template(judge.template), []
    for d in disputed:
        request, _ = fitted_judge_request(template, d.candidate["prompt"], d.candidate["text"], engine, judge.max_new_tokens)
        pair, reason = judge_pair(d, net_wins(d, winners), request.messages[0][1])
        if pair is None:
            skipped[reason or "no_preference"] += 1
        else:
            pairs.append(pair)
    return pairs


def read_meta_inputs(out_dir: Path) -> tuple[list[Disputed], Counter[str], list[dict[str, Any]], int]:
    """The candidates to meta-judge, counts of prompts left out, the actor pairs of pairs.jsonl and
    the number of judgments naming no candidate (left out), all checked (selfreward.stage_inputs)."""
    candidates, judgments, pairs = (StageFiles(out_dir, name) for name in ("candidates", "judgments", "pairs"))
    for needed in (candidates, judgments, pairs):
        if not needed.stats.exists():
            raise SelfRewardError(f"{needed.stats} not found: run the {needed.name} stage first")
    candidate_rows = read_records(candidates.records, CandidateRecord)
    judgment_rows = read_records(judgments.records, JudgmentRecord)
    by_candidate, orphans = judgments_by_candidate(candidate_rows, judgment_rows, judgments.records)
    disputed, skipped = most_disputed(candidate_rows, by_candidate)
    pair_rows = read_records(pairs.records, PairRecord)
    actor = [p for p in pair_rows if p.get("kind") != "judge"]  # a resumed stage replaces its own rows
    return disputed, skipped, actor, orphans


def run_meta_judge(
    config: MetaConfig, judge: JudgeConfig, load_engine: Callable[[], Engine], out_dir: Path, seed: int, batch_size: int
) -> dict[str, Any]:
    """Meta-judge each prompt's most disputed candidate and add judge pairs to pairs.jsonl (resumable;
    the inputs are checked before `load_engine` loads the model)."""
    files = StageFiles(out_dir, "meta")
    if files.done():
        return files.read_stats()
    disputed, skipped, actor, orphans = read_meta_inputs(out_dir)
    template = meta_template(config.template)
    engine = load_engine()
    disputed, items = fitting_items(template, disputed, engine, config.max_new_tokens, skipped)
    run = run_batches(files, items, engine, Sampling(config.temperature, config.top_p, config.max_new_tokens), seed, batch_size, "meta-judge", verdict_rows)
    winners, orders = outcomes(run.records)
    found = judge_pairs(judge, engine, disputed, winners, skipped)
    pairs = StageFiles(out_dir, "pairs")
    kept = capped(found, judge_pair_cap(config.fraction, len(actor)))
    write_jsonl(pairs.records, actor + kept)
    stats = meta_stats(disputed, run.records, orders, skipped, found, kept, len(actor))
    stats["judgments_without_candidate"] = orphans
    files.finish(run.records, stats)
    return stats


def meta_stats(disputed: list[Disputed], verdicts: list[dict[str, Any]], orders: Counter[str], skipped: Counter[str], found: list[dict[str, Any]], kept: list[dict[str, Any]], actor: int) -> dict[str, Any]:
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
        "score_histogram": score_histogram([j["text_score"] for d in disputed for j in d.judgments]),
        "chosen_score_histogram": score_histogram([p["chosen_score"] for p in kept]),
        "rejected_score_histogram": score_histogram([p["rejected_score"] for p in kept]),
        "judge_pairs_found": len(found),
        "judge_pairs": len(kept),
        "actor_pairs": actor,
        "judge_pair_share": round(len(kept) / (actor + len(kept)), 3) if actor + len(kept) else None,
    }

