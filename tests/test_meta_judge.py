"""The meta-judge stage: which candidate it meta-judges, how verdicts become a ranking, the cap."""

from __future__ import annotations

import json
import re

import pytest

from selfreward.config import load_config
from selfreward.engines.base import Completion, Engine
from selfreward.judging.prompt import template_with
from selfreward.prompts import fill
from selfreward.records import read_jsonl, write_json, write_jsonl
from selfreward.stages.meta_judge import judge_pair_cap, parse_winner, run_meta_judge
from selfreward.steps import run_step

QUALITY = re.compile(r"quality (\d)")


class ScriptedMetaJudge(Engine):
    """Prefers the evaluation with the higher `quality N`; `biased` ones always lose to position A,
    `garbled` ones get no verdict."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def generate(self, requests, sampling, seed):
        out = []
        for request in requests:
            text = request.messages[-1][1]
            self.requests.append(text)
            a, b = text.split("[Evaluation A]")[1].split("[Evaluation B]")
            if "garbled" in a:
                out.append(Completion("I cannot decide.", 4))
            elif "biased" in a:
                out.append(Completion("A reads better.\nWinner: A", 6))
            else:
                better = "A" if int(QUALITY.search(a).group(1)) > int(QUALITY.search(b).group(1)) else "B"
                out.append(Completion(f"Reasons.\n**Winner:** {better}", 6))
        return out


def judgment(candidate: str, k: int, score: float | None, text: str) -> dict:
    return {
        "id": f"{candidate}-j{k}",
        "candidate_id": candidate,
        "prompt_id": candidate.split("-")[0],
        "text": text,
        "text_score": score,
        "score": score,
        "method": "text" if score is not None else None,
    }


def write_iteration(out_dir, actor_pairs: int) -> None:
    """Five prompts: p0's c1 has the widest spread (1, 5, 3); p1's judgments are position-biased,
    p2's verdicts unparsable, p3 has no text scores, p4 a clear preference with a smaller gap."""
    candidates = [
        {"id": f"p{p}-c{c}", "prompt_id": f"p{p}", "prompt": f"Question {p}?", "text": f"Answer {p}.{c}"}
        for p in range(5)
        for c in range(2)
    ]
    candidates.append({"id": "p0-c2", "prompt_id": "p0", "prompt": "Question 0?", "text": "Answer 0.2"})
    judgments = [
        *(judgment("p0-c0", k, 4, f"steady quality {k}\nScore: 4") for k in range(3)),
        judgment("p0-c1", 0, 1, "quality 1\nScore: 1"),
        judgment("p0-c1", 1, 5, "quality 3\nScore: 5"),
        judgment("p0-c1", 2, 3, "quality 2\nScore: 3"),
        judgment("p0-c2", 0, 2, "quality 1\nScore: 2"),
        judgment("p0-c2", 1, 3, "quality 2\nScore: 3"),
        judgment("p1-c0", 0, 0, "biased one\nScore: 0"),
        judgment("p1-c0", 1, 5, "biased two\nScore: 5"),
        judgment("p2-c0", 0, 1, "garbled one\nScore: 1"),
        judgment("p2-c0", 1, 4, "garbled two\nScore: 4"),
        judgment("p3-c0", 0, None, "no score"),
        judgment("p3-c0", 1, None, "none either"),
        judgment("p4-c0", 0, 2, "quality 5\nScore: 2"),
        judgment("p4-c0", 1, 4, "quality 0\nScore: 4"),
    ]
    actors = [
        {"id": f"a{i}", "prompt": "q", "chosen": "good", "rejected": "bad", "margin": 1.0} for i in range(actor_pairs)
    ]
    for name, rows in (("candidates", candidates), ("judgments", judgments), ("pairs", actors)):
        write_jsonl(out_dir / f"{name}.jsonl", rows)
        write_json(out_dir / f"{name}.stats.json", {"stage": name})


def run(out_dir, fraction: float):
    config = load_config("demo", [f"meta.fraction={fraction}"])
    return run_meta_judge(config.meta, config.judge, ScriptedMetaJudge, out_dir, seed=1, batch_size=3)


def test_meta_judge_ranks_the_most_disputed_candidates_judgments(tmp_path):
    write_iteration(tmp_path, actor_pairs=2)
    stats = run(tmp_path, 0.5)
    verdicts = read_jsonl(tmp_path / "meta.jsonl")
    assert {v["candidate_id"] for v in verdicts} == {
        "p0-c1",
        "p1-c0",
        "p2-c0",
        "p4-c0",
    }  # widest spread; p3 has no scores
    assert len(verdicts) == 2 * (3 + 1 + 1 + 1)  # every two judgments, both orders
    assert stats["skipped"] == {
        "fewer_than_2_scored_judgments": 1,
        "no_preference": 2,
    }  # p1: orders disagree, p2: unparsable
    assert (stats["comparisons"], stats["order_disagreements"], stats["unparsable_verdicts"]) == (6, 1, 2)
    assert stats["order_agreement"] == round(4 / 5, 3)
    parsed = [v for v in verdicts if v["winner"]]
    assert stats["first_position_win_rate"] == round(sum(v["winner"] == "A" for v in parsed) / len(parsed), 3)
    assert stats["score_histogram"] == {"0": 1, "1": 2, "2": 1, "3": 1, "4": 2, "5": 2}
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    actor, judge = pairs[:2], pairs[2:]
    assert all("kind" not in p for p in actor) and [p["kind"] for p in judge] == ["judge", "judge"]
    best = judge[0]
    assert (best["chosen_id"], best["rejected_id"]) == ("p0-c1-j1", "p0-c1-j0")  # quality 3 beats 2 beats 1
    assert (best["chosen_net_wins"], best["rejected_net_wins"]) == (2, -2)
    assert best["prompt"] == fill(
        template_with("judge_additive_5pt", ("instruction", "response")),
        instruction="Question 0?",
        response="Answer 0.1",
    )
    assert (judge[1]["chosen_id"], judge[1]["chosen_score"], judge[1]["rejected_score"]) == ("p4-c0-j0", 2, 4)
    assert (stats["judge_pairs"], stats["actor_pairs"], stats["judge_pair_share"]) == (2, 2, 0.5)


def test_cap_keeps_the_clearest_judge_pairs_and_resume_adds_none_twice(tmp_path):
    write_iteration(tmp_path, actor_pairs=1)
    stats = run(tmp_path, 0.5)
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert (stats["judge_pairs_found"], stats["judge_pairs"]) == (2, 1)
    assert [p.get("kind") for p in pairs] == [None, "judge"] and pairs[1][
        "candidate_id"
    ] == "p0-c1"  # gap 4 beats gap 2
    (tmp_path / "meta.stats.json").unlink()  # a kill after pairs.jsonl was rewritten
    assert run(tmp_path, 0.5) == stats and read_jsonl(tmp_path / "pairs.jsonl") == pairs


def test_judgments_of_missing_candidates_are_left_out_and_counted(tmp_path):
    write_iteration(tmp_path, actor_pairs=2)
    orphans = [judgment("p9-c0", k, s, f"quality {k}\nScore: {s}") for k, s in ((0, 0), (1, 5))]
    write_jsonl(tmp_path / "judgments.jsonl", read_jsonl(tmp_path / "judgments.jsonl") + orphans)
    stats = run(tmp_path, 0.5)
    assert stats["judgments_without_candidate"] == 2 and stats["prompts_meta_judged"] == 4
    assert "p9-c0" not in {v["candidate_id"] for v in read_jsonl(tmp_path / "meta.jsonl")}


@pytest.mark.parametrize(("fraction", "actor", "cap"), [(0.1, 8, 0), (0.1, 9, 1), (0.15, 17, 3), (0.5, 7, 7)])
def test_judge_pairs_stay_within_the_fraction(fraction, actor, cap):
    assert judge_pair_cap(fraction, actor) == cap
    assert cap / (actor + cap) <= fraction if cap else True
    assert (cap + 1) / (actor + cap + 1) > fraction


def test_winner_lines():
    assert parse_winner("B is vaguer.\nWinner: A") == "A"
    assert parse_winner("Winner: A\n**Winner**: b") == "B"
    assert parse_winner("The winner is clearly A") is None and parse_winner("") is None


def test_meta_needs_the_pairs_stage_and_a_complete_template(tmp_path):
    from selfreward.errors import SelfRewardError

    with pytest.raises(SelfRewardError, match="run the candidates stage first"):
        run(tmp_path, 0.1)
    write_iteration(tmp_path, actor_pairs=1)
    bad = tmp_path / "bad.txt"
    bad.write_text("{instruction} {response} {judgment_a}")
    config = load_config("demo", [f"meta.template={bad}"])
    with pytest.raises(SelfRewardError, match=r"lacks \{judgment_b\}"):
        run_meta_judge(config.meta, config.judge, ScriptedMetaJudge, tmp_path, 1, 2)
    with pytest.raises(SelfRewardError, match=r"meta\.fraction"):
        load_config("demo", ["meta.fraction=0.6"])
    assert json.loads((tmp_path / "pairs.stats.json").read_text()) == {"stage": "pairs"}


def test_meta_stage_in_the_tiny_loop_with_scripted_judgments(tiny_model, tmp_path, monkeypatch):
    """AIFT on the tiny model with the meta-judge on; judgments and verdicts are scripted (the
    random model writes no scores): the meta-judge prefers the evaluation with the higher score."""
    import statistics

    from selfreward.engines.hf import HFEngine
    from selfreward.recipes.aift import run_aift
    from selfreward.stages import dpo

    original, original_n = HFEngine.generate, HFEngine.generate_n

    def scripted(self, requests, sampling, seed):
        texts = [r.messages[-1][1] for r in requests]
        if all("[Evaluation A]" in t for t in texts):
            scores = [[int(s) for s in re.findall(r"Score: (\d)", t.split("[Evaluation A]")[1])] for t in texts]
            return [Completion("Winner: A" if a > b else "Winner: B", 3) for a, b in scores]
        return original(self, requests, sampling, seed)

    def scripted_n(self, requests, n, sampling, seeds):  # the stages sample through generate_n
        if all("[Evaluation A]" in r.messages[-1][1] for r in requests):
            return [[c] * n for c in scripted(self, requests, sampling, seeds[0])]
        if all("additive 5-point" in r.messages[-1][1] for r in requests):
            return [
                [Completion(f"Judgment {seed % 1000}-{j}.\nScore: {(seed + 3 * j) % 6}", 8) for j in range(n)]
                for seed in seeds
            ]
        return original_n(self, requests, n, sampling, seeds)

    monkeypatch.setattr(HFEngine, "generate", scripted)
    monkeypatch.setattr(HFEngine, "generate_n", scripted_n)
    seed_file = tmp_path / "seed.jsonl"
    seed_file.write_text(
        "".join(
            json.dumps({"prompt": f"Explain {t} to a child in a few sentences.", "response": f"About {t}."}) + "\n"
            for t in ("tea", "tides", "clouds", "bread", "sleep", "maps")
        )
    )
    config = load_config(
        "demo",
        [
            f"model.name_or_path={tiny_model}",
            f"data.ift=[{seed_file}]",
            "engine.batch_size=4",
            "prompts.num_prompts=3",
            "prompts.requests_per_round=4",
            "prompts.max_rounds=4",
            "prompts.min_words=1",
            "prompts.max_new_tokens=40",
            "prompts.rouge_threshold=0.99",
            "candidates.max_new_tokens=40",
            "pairs.require_finished=false",
            "judge.k=3",
            "meta.enabled=true",
            "meta.fraction=0.5",
        ],
    )
    out = tmp_path / "it"
    stats = run_aift(config, out)
    assert list(stats) == ["prompts", "candidates", "judge", "pairs", "meta"]
    candidates, judgments = read_jsonl(out / "candidates.jsonl"), read_jsonl(out / "judgments.jsonl")
    spreads = {
        c["id"]: statistics.pstdev([j["text_score"] for j in judgments if j["candidate_id"] == c["id"]])
        for c in candidates
    }
    widest = {}
    for c in candidates:  # the first candidate of the widest spread per prompt
        if spreads[c["id"]] > spreads.get(widest.get(c["prompt_id"]), -1):
            widest[c["prompt_id"]] = c["id"]
    verdicts = read_jsonl(out / "meta.jsonl")
    assert {v["candidate_id"] for v in verdicts} == {cid for cid in widest.values() if spreads[cid] > 0}
    pairs = read_jsonl(out / "pairs.jsonl")
    actor, judge = [p for p in pairs if "kind" not in p], [p for p in pairs if p.get("kind") == "judge"]
    meta = stats["meta"]
    assert len(actor) == stats["pairs"]["pairs"] and len(judge) == meta["judge_pairs"] <= judge_pair_cap(
        0.5, len(actor)
    )
    assert meta["judge_pairs"] > 0 and all(p["chosen_score"] > p["rejected_score"] for p in judge)
    score = {j["id"]: j["text_score"] for j in judgments}
    level = {
        v["pair"] for v in verdicts if len({score[i] for i in v["pair"].split("|")}) == 1
    }  # "Winner: B" both ways: a tie
    assert (meta["order_disagreements"], meta["comparisons"], meta["unparsable_verdicts"]) == (
        len(level),
        len(verdicts) // 2,
        0,
    )
    assert_judge_pairs_reach_dpo(dpo, config, tiny_model, out / "pairs.jsonl", judge, tmp_path, monkeypatch)


def assert_judge_pairs_reach_dpo(dpo, config, model, pairs_file, judge, tmp_path, monkeypatch):
    """DPO's training set (the DPOTrainer's tokenized rows, decoded) holds every judge pair."""
    trainers = []
    monkeypatch.setattr(dpo, "train_and_save", lambda trainer, tokenizer, *args: trainers.append((trainer, tokenizer)))
    everything = config.dpo.model_copy(update={"eval_fraction": 0.0, "max_length": 8192})  # none held out or too long
    run_step(
        dpo.TrainDPO(
            "dpo1", config.model, everything, str(model), None, pairs_file, tmp_path / "dpo1", tmp_path / "M2", 0
        )
    )
    ((trainer, tokenizer),) = trainers
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    rows = [tuple(tokenizer.decode(row[key]) for key in keys) for row in trainer.train_dataset]
    assert len(rows) == len(read_jsonl(pairs_file)) and judge
    for pair in judge:
        texts = (pair["prompt"], pair["chosen"], pair["rejected"])
        assert any(all(text in decoded for text, decoded in zip(texts, row, strict=True)) for row in rows)


def test_turning_the_meta_judge_on_for_a_finished_run_is_refused(finished_run, tmp_path):
    """iter1/pairs.jsonl must stay what M2 was trained on: the meta stage is refused, in one line, for an
    iteration whose DPO is done, and nothing in the run changes (its config neither)."""
    import shutil

    from conftest import invoke

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], run_dir, ignore=shutil.ignore_patterns("eval"))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    result = invoke("run", "--resume", run_dir, "--set", "meta.enabled=true", "--force")
    assert result.exit_code == 2, result.output
    refusal = (
        f"error: step meta is enabled but did not run in {run_dir / 'iter1'}, whose DPO is done: it would "
        "change the data after M2 was trained on it; turn it off for this run (with --force) or start a new run"
    )
    assert result.stderr.splitlines() == [refusal]
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"} == before
    again = invoke("run", "--resume", run_dir)
    assert again.exit_code == 0, again.output
