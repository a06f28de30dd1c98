"""Checkpoint selection (`select`) in the tiny loop: every kept checkpoint is compared with M_t, the
best one by recorded win rate becomes M_{t+1}, and a resume makes the same choice."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import invoke
from safetensors.torch import load_file

from selfreward.config import load_config
from selfreward.errors import SelfRewardError
from selfreward.records import read_json, read_jsonl
from selfreward.stages import select
from selfreward.training import complete_checkpoints

SELECT_RUN = [
    "select.enabled=true",
    "select.max_prompts=4",
    "dpo.save_steps=1",
    "dpo.epochs=3",
    "loop.iterations=1",
    "sft.baseline=false",
    "eft.judge=m0",
]


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)


def candidate_dir(run_dir, name):
    return run_dir / "dpo1" / ("final" if name == "final" else f"trainer/{name}")


@pytest.fixture(scope="module")
def select_run(loop_config, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("select") / "run"
    result = invoke("run", loop_config, "--out", run_dir, *(a for o in SELECT_RUN for a in ("--set", o)))
    assert result.exit_code == 0, result.output
    return run_dir


def test_every_checkpoint_is_compared_and_the_best_is_promoted(select_run):
    stats = read_json(select_run / "dpo1" / "select.stats.json")
    steps = read_json(select_run / "dpo1" / "dpo.stats.json")["steps"]
    kept = [p.name for p in complete_checkpoints(select_run / "dpo1" / "trainer")]
    assert steps >= 3 and kept == [f"checkpoint-{s}" for s in range(1, steps)]  # one a step but the last, none deleted
    assert [c["name"] for c in stats["candidates"]] == [*kept, "final"]  # the final model is the last step's
    best = max(c["win_rate"] for c in stats["candidates"])
    assert stats["chosen_win_rate"] == best and [
        c["win_rate"] for c in stats["candidates"] if c["name"] == stats["chosen"]
    ] == [best]
    assert same_weights(select_run / "models" / "M2", candidate_dir(select_run, stats["chosen"]))
    assert (
        not list((select_run / "models" / "M2").glob("optimizer*"))
        and (select_run / "models" / "M2" / "tokenizer.json").exists()
    )
    for c in stats["candidates"]:
        verdicts = read_jsonl(select_run / "dpo1" / "select" / f"{c['name']}_vs_M1.jsonl")
        assert len(verdicts) == 2 * stats["prompts"] == 8 and {v["order"] for v in verdicts} == {"xy", "yx"}
        assert c["win_rate"] == pytest.approx(c["win"] + c["tie"] / 2, abs=0.11)
    assert stats["judge"] == {"kind": "hf", "model": str(select_run / "models" / "M1")}
    manifest = json.loads((select_run / "manifest.json").read_text())
    record = manifest["stages"]["select1"]
    assert record["status"] == "done" and record["chosen"] == stats["chosen"]
    assert record["win_rates"] == {c["name"]: c["win_rate"] for c in stats["candidates"]}
    assert [s for s in manifest["stages"] if s.endswith("1") or s.startswith("iter1/")] == [
        f"iter1/{s}" for s in ("prompts", "candidates", "judge", "pairs")
    ] + ["dpo1", "select1", "validate1"]


def scripted_comparison(win_rates):
    """compare_answers that gives each candidate its win rate in `win_rates` (others: 10%)."""

    def compare(judge, prompts, answers_x, answers_y, out_dir, name, sampling, seed, batch_size):
        rate = win_rates.get(name.split("_vs_")[0], 10.0)
        return {
            "stage": "compare",
            "prompts": len(prompts),
            "win": rate,
            "tie": 0.0,
            "lose": 100 - rate,
            "win_rate": rate,
            "unparsable_verdicts": 0,
            "order_disagreements": 0,
        }

    return compare


def test_a_middle_checkpoint_with_the_best_win_rate_becomes_the_next_model(select_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "copy"
    shutil.copytree(select_run, run_dir)
    (run_dir / "dpo1" / "select.stats.json").unlink()
    monkeypatch.setattr(
        select, "compare_answers", scripted_comparison({"checkpoint-1": 75.0, "checkpoint-2": 40.0, "final": 75.0})
    )
    monkeypatch.setattr(select, "make_judge_engine", lambda *a: type("NoJudge", (), {"close": lambda self: None})())
    result = invoke("run", "--resume", run_dir)
    assert result.exit_code == 0, result.output
    stats = read_json(run_dir / "dpo1" / "select.stats.json")
    assert stats["chosen"] == "final"  # equal win rates: the later candidate
    monkeypatch.setattr(
        select, "compare_answers", scripted_comparison({"checkpoint-1": 40.0, "checkpoint-2": 90.0, "final": 60.0})
    )
    config = load_config(str(run_dir / "config.yaml"))
    stats = select.select_checkpoint(config, run_dir, 1, run_dir / "models" / "M1", run_dir / "models" / "M2")
    assert (stats["chosen"], stats["chosen_win_rate"]) == ("checkpoint-2", 90.0)
    assert same_weights(run_dir / "models" / "M2", candidate_dir(run_dir, "checkpoint-2"))
    assert not same_weights(run_dir / "models" / "M2", run_dir / "dpo1" / "final")
    assert not (run_dir / "models" / "M2.tmp").exists()


def test_the_self_judge_writes_m_ts_answers_without_a_second_load(select_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "copy"
    shutil.copytree(select_run, run_dir)
    answers = run_dir / "dpo1" / "select" / "answers"
    before = read_jsonl(answers / "M1.jsonl")
    for path in answers.glob("M1.*"):
        path.unlink()
    loaded = []
    real_make_engine = select.make_engine
    monkeypatch.setattr(
        select, "make_engine", lambda config, path: loaded.append(path) or real_make_engine(config, path)
    )
    monkeypatch.setattr(select, "compare_answers", scripted_comparison({}))
    config = load_config(str(run_dir / "config.yaml"))
    select.select_checkpoint(config, run_dir, 1, run_dir / "models" / "M1", run_dir / "models" / "M2")
    assert loaded == []  # the checkpoints' answers were on disk; M1's came from the judge engine
    assert read_jsonl(answers / "M1.jsonl") == before  # the same engine and seed: the same answers


def test_resume_skips_a_finished_selection(select_run):
    result = invoke("run", "--resume", select_run)
    assert result.exit_code == 0, result.output
    assert "[select1] already complete, skipped" in result.output


def test_select_with_lora_is_refused_at_config_load():
    with pytest.raises(SelfRewardError, match=r"select\.enabled needs full-model DPO checkpoints"):
        load_config("demo", ["select.enabled=true", "dpo.lora={r: 4}"])


def test_no_validation_prompts_is_one_line(select_run, tmp_path):
    config = load_config(str(select_run / "config.yaml"), ["select.prompts=[]"])
    with pytest.raises(SelfRewardError, match="gave no validation prompts"):
        select.validation_prompts(tmp_path, config)


def test_report_shows_every_candidate_and_the_promoted_one(select_run):
    result = invoke("report", select_run)
    assert result.exit_code == 0, result.output
    markdown = (select_run / "report.md").read_text()
    section = markdown.split("## Checkpoint selection")[1].split("\n## ")[0]
    stats = read_json(select_run / "dpo1" / "select.stats.json")
    rows = [line for line in section.splitlines() if line.startswith("| 1 |")]
    assert [row.split(" | ")[1] for row in rows] == [c["name"] for c in stats["candidates"]]
    assert [row.split(" | ")[1] for row in rows if row.rstrip(" |").endswith("M2")] == [stats["chosen"]]


def test_judge_model_names_what_a_local_judge_loads(tiny_model):
    from selfreward.config import LocalJudgeConfig, ServerJudgeConfig
    from selfreward.engines import judge_model

    assert judge_model(LocalJudgeConfig(), str(tiny_model)) == str(tiny_model)  # default: the model under test
    assert judge_model(LocalJudgeConfig(model=str(tiny_model)), "elsewhere/not/a/model") == str(tiny_model)
    assert judge_model(ServerJudgeConfig(base_url="http://localhost:1", model="m"), str(tiny_model)) is None
