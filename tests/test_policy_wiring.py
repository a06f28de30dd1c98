"""spin and anchored in the iteration: the stages that feed them, and what their pairs contain."""

from __future__ import annotations

import io
import json

import pytest
from conftest import TINY_AIFT
from rich.console import Console

from selfreward.config import load_config
from selfreward.errors import SelfRewardError
from selfreward.recipes.aift import run_aift
from selfreward.records import read_jsonl
from selfreward.steps import Lineage

TOPICS = [
    "bread",
    "tides",
    "rainbows",
    "compound interest",
    "sorting lists",
    "volcanoes",
    "sleep",
    "tea",
    "bicycles",
    "clouds",
]


@pytest.fixture
def ift_file(tmp_path):
    path = tmp_path / "ift.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"Explain {t} in a few sentences.", "response": f"The human answer about {t}."})
            + "\n"
            for t in TOPICS
        )
    )
    return path


def config_for(model, ift_file, policy, *extra):
    return load_config(
        "demo",
        [
            f"model.name_or_path={model}",
            f"data.ift=[{ift_file}]",
            *TINY_AIFT,
            f"pairs.policy={policy}",
            "pairs.min_margin=0.0",
            *extra,
        ],
    )


def quiet() -> Console:
    return Console(file=io.StringIO())


def test_spin_pairs_human_answers_of_ift_prompts_with_unjudged_samples(tiny_model, ift_file, tmp_path):
    out = tmp_path / "it"
    stats = run_aift(config_for(tiny_model, ift_file, "spin"), out, console=quiet())
    assert list(stats) == ["prompts", "candidates", "pairs"] and stats["prompts"]["source"] == "ift"  # no judge
    assert not (out / "judgments.jsonl").exists() and not (out / "prompts.raw.jsonl").exists()
    human = {json.loads(line)["prompt"]: json.loads(line)["response"] for line in ift_file.read_text().splitlines()}
    prompts = read_jsonl(out / "prompts.jsonl")
    assert len(prompts) == 3 and all(
        p["source"] == "ift" and p["reference_answer"] == human[p["prompt"]] for p in prompts
    )
    pairs = read_jsonl(out / "pairs.jsonl")
    candidates = {c["id"]: c for c in read_jsonl(out / "candidates.jsonl")}
    assert pairs and stats["pairs"]["pairs"] == len(pairs)
    for pair in pairs:
        assert pair["chosen"] == human[pair["prompt"]] and pair["chosen_source"] == "human"
        assert (
            pair["rejected"] == candidates[pair["rejected_id"]]["text"]
            and candidates[pair["rejected_id"]]["prompt_id"] == pair["id"]
        )


def test_spin_iterations_draw_their_own_ift_prompts(tiny_model, ift_file, tmp_path):
    config = config_for(tiny_model, ift_file, "spin")
    firsts = [
        run_aift(config, tmp_path / tag, tag=tag, stages=("prompts",), console=quiet())
        and read_jsonl(tmp_path / tag / "prompts.jsonl")
        for tag in ("iter1", "iter2")
    ]
    assert [p["id"] for p in firsts[0]] != [p["id"] for p in firsts[1]]


def test_anchored_rejects_the_initial_models_answers_and_caches_them(tiny_model, ift_file, tmp_path, monkeypatch):
    out = tmp_path / "it"
    config = config_for(tiny_model, ift_file, "anchored")
    stats = run_aift(config, out, console=quiet(), lineage=Lineage(initial=str(tiny_model)))
    assert list(stats) == ["prompts", "candidates", "judge", "anchor", "pairs"]
    anchors = {a["id"]: a for a in read_jsonl(out / "anchor" / "candidates.jsonl")}
    assert read_jsonl(out / "anchor" / "prompts.jsonl") == read_jsonl(out / "prompts.jsonl")
    assert {j["candidate_id"] for j in read_jsonl(out / "anchor" / "judgments.jsonl")} == set(anchors)
    assert (
        stats["anchor"]["model"] == str(tiny_model)
        and stats["anchor"]["candidates"] == len(anchors) == 4 * stats["prompts"]["prompts_kept"]
    )
    current = {c["id"] for c in read_jsonl(out / "candidates.jsonl")}
    pairs = read_jsonl(out / "pairs.jsonl")
    assert pairs
    for pair in pairs:
        assert pair["rejected_id"] in anchors and pair["rejected"] == anchors[pair["rejected_id"]]["text"]
        assert anchors[pair["rejected_id"]]["prompt_id"] == pair["id"] and pair["chosen_id"] in current
    (out / "pairs.stats.json").unlink()
    with monkeypatch.context() as patched:  # a finished anchor stage loads no model
        patched.setattr("selfreward.steps.make_engine", lambda *a: pytest.fail("the anchor stage ran again"))
        run_aift(config, out, console=quiet(), lineage=Lineage(initial=str(tiny_model)))
    answers, judgments = (
        (out / "anchor" / "candidates.jsonl").read_bytes(),
        read_jsonl(out / "anchor" / "judgments.jsonl"),
    )
    for done in ("anchor.stats.json", "anchor/judgments.jsonl", "anchor/judgments.stats.json", "pairs.stats.json"):
        (out / done).unlink()
    run_aift(
        config, out, console=quiet(), lineage=Lineage(initial=str(tiny_model))
    )  # resumed: the answers are kept, the judgments made again
    assert (out / "anchor" / "candidates.jsonl").read_bytes() == answers and read_jsonl(
        out / "anchor" / "judgments.jsonl"
    ) == judgments
    assert read_jsonl(out / "pairs.jsonl") == pairs


def test_meta_judge_with_spin_is_refused_at_config_load(tiny_model, ift_file):
    with pytest.raises(SelfRewardError, match=r"meta\.enabled needs judge scores"):
        config_for(tiny_model, ift_file, "spin", "meta.enabled=true")


LEAN_RUN = ["sft.baseline=false", "eft.judge=m0"]


def run_with(loop_config, run_dir, *overrides):
    from conftest import invoke

    result = invoke("run", loop_config, "--out", run_dir, *(a for o in (*LEAN_RUN, *overrides) for a in ("--set", o)))
    assert result.exit_code == 0, result.output
    return json.loads((run_dir / "summary.json").read_text())


def test_spin_runs_end_to_end_in_the_loop(loop_config, tmp_path):
    from selfreward.seed_data import load_ift

    run_dir = tmp_path / "spin"
    summary = run_with(loop_config, run_dir, "pairs.policy=spin", "loop.iterations=1")
    assert summary["models"] == ["M1", "M2"] and "judge_parse_rate" not in summary["iterations"][0]
    human = {e.prompt: e.response for e in load_ift(["demo"])[0]}
    pairs = read_jsonl(run_dir / "iter1" / "pairs.jsonl")
    assert pairs and all(p["chosen"] == human[p["prompt"]] for p in pairs)
    assert not (run_dir / "iter1" / "judgments.jsonl").exists()


def test_anchored_runs_end_to_end_with_m1_as_the_anchor(loop_config, tmp_path):
    run_dir = tmp_path / "anchored"
    summary = run_with(loop_config, run_dir, "pairs.policy=anchored")
    assert summary["models"] == ["M1", "M2", "M3"]
    for t in (1, 2):
        iter_dir = run_dir / f"iter{t}"
        assert json.loads((iter_dir / "anchor.stats.json").read_text())["model"] == str(run_dir / "models" / "M1")
        anchors = {a["id"]: a for a in read_jsonl(iter_dir / "anchor" / "candidates.jsonl")}
        pairs = read_jsonl(iter_dir / "pairs.jsonl")
        assert pairs and all(
            p["rejected"] == anchors[p["rejected_id"]]["text"] and anchors[p["rejected_id"]]["prompt_id"] == p["id"]
            for p in pairs
        )
    assert summary["iterations"][1]["anchor_mean_score"] is not None
