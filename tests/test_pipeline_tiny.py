"""The whole loop on a tiny random Llama: M0 -> SFT baseline -> EFT -> M1 -> M2 -> M3, resume, stops."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import invoke

from selfreward.records import read_committed, read_jsonl

RECORD_FILES = [
    "eft/judgments.jsonl",
    "eft/train.jsonl",
    "eft/eval.jsonl",
    *(f"iter{t}/{name}.jsonl" for t in (1, 2) for name in ("prompts", "candidates", "judgments", "pairs")),
]


AIFT = ("prompts", "candidates", "judge", "pairs")


def test_loop_runs_two_iterations(finished_run):
    run_dir, output = finished_run
    assert "selfreward run: per iteration" in output and "before the loop" in output
    assert "top-score share" in output and "iter 2 (M2)" in output  # whole titles at 80 columns
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["models"] == ["M1", "M2", "M3", "sft_baseline"]
    assert [it["iteration"] for it in summary["iterations"]] == [1, 2]
    for it in summary["iterations"]:
        assert it["pairs"] > 0 and it["dpo_loss"] is not None and it["candidates"] == 4 * it["prompts_kept"]
        pairs = read_jsonl(run_dir / f"iter{it['iteration']}" / "pairs.jsonl")
        assert all(p["margin"] == p["chosen_score"] - p["rejected_score"] > 0 for p in pairs)
        stats = json.loads((run_dir / f"iter{it['iteration']}" / "pairs.stats.json").read_text())
        assert sum(stats["margin_histogram"].values()) == len(pairs) == it["pairs"]
        assert stats["min_margin_kept"] == min(p["margin"] for p in pairs)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {"config", "versions", "git_commit", "seed", "stages"} <= manifest.keys()
    assert [s for s, v in manifest["stages"].items() if v["status"] == "done"] == [
        "sft_baseline",
        "eft",
        "sft",
        *(f"iter1/{s}" for s in AIFT),
        "dpo1",
        "validate1",
        *(f"iter2/{s}" for s in AIFT),
        "dpo2",
        "validate2",
    ]
    assert all(
        v["seconds"] >= 0 and v["started"] <= v["ended"] for v in manifest["stages"].values() if v["status"] == "done"
    )
    assert (run_dir / "run.log").read_text().count("] started") == 15  # each step once
    eft = summary["eft"]
    assert eft["train_groups_tried"] == 6 and eft["eval_groups"] > 0
    assert len(read_jsonl(run_dir / "eft" / "eval.jsonl")) == eft["eval_groups"]


def test_checkpoints_load_and_generate(finished_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = finished_run[0]
    for name in ("sft_baseline", "M1", "M2", "M3"):
        path = run_dir / "models" / name
        assert (path / "model.safetensors").exists()
        model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Explain tides."}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
        assert out.shape[1] > ids["input_ids"].shape[1]


def test_second_run_command_resumes_nothing_to_do(finished_run):
    run_dir = finished_run[0]
    before = {f: (run_dir / f).read_bytes() for f in RECORD_FILES}
    result = invoke("run", "--resume", run_dir)
    assert result.exit_code == 0, result.output
    assert result.output.count("already complete, skipped") == 15 and "] started" not in result.output
    assert {f: (run_dir / f).read_bytes() for f in RECORD_FILES} == before


def test_sigkill_during_judge_then_resume_matches_uninterrupted_run(finished_run, loop_config, tmp_path):
    reference = finished_run[0]
    run_dir = tmp_path / "killed"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfreward", "run", str(loop_config), "--out", str(run_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = run_dir / "iter1" / "judgments.jsonl.partial"
    deadline = (
        time.time() + 900
    )  # generous: a loaded machine is slow, and the kill comes at the first judge batch anyway
    while time.time() < deadline and proc.poll() is None:
        if partial.exists() and partial.stat().st_size > 0:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the judge stage could be interrupted"
    assert not (run_dir / "iter1" / "judgments.stats.json").exists()
    done_before = len(read_committed(partial))
    assert 0 < done_before < len(read_jsonl(reference / "iter1" / "judgments.jsonl"))
    result = invoke("run", "--resume", run_dir)
    assert result.exit_code == 0, result.output
    for name in RECORD_FILES:
        assert read_jsonl(run_dir / name) == read_jsonl(reference / name), name
    judgments = read_jsonl(run_dir / "iter1" / "judgments.jsonl")
    assert len({j["id"] for j in judgments}) == len(judgments)


def test_resume_errors(finished_run, tmp_path):
    result = invoke("run", "--resume", tmp_path)
    assert result.exit_code == 2 and "is not a selfreward run" in result.stderr
    result = invoke("run", "--resume", finished_run[0], "--set", "judge.k=2", "--set", "seed=5")
    assert result.exit_code == 2 and "differs in: judge.k, seed" in result.stderr
    result = invoke("run", "--out", finished_run[0])
    assert result.exit_code == 2 and "already holds a run" in result.stderr


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_zero_pairs_stops_or_skips_cleanly(loop_config, tmp_path, policy):
    run_dir = tmp_path / policy
    result = invoke(
        "run",
        loop_config,
        "--out",
        run_dir,
        "--set",
        "judge.fallback=off",
        "--set",
        f"loop.on_no_pairs={policy}",
        "--set",
        "sft.baseline=false",
        "--set",
        "eft.judge=m0",
    )
    assert result.exit_code == 0, result.output
    assert "produced 0 pairs" in result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["models"] == ["M1"]
    assert [it["pairs"] for it in summary["iterations"]] == ([0] if policy == "stop" else [0, 0])


def test_checkpoint_cut_short_by_a_kill_is_not_resumed_from(tmp_path):
    from selfreward.training import latest_checkpoint

    for step, complete in ((2, True), (4, True), (6, False)):  # a kill during checkpoint-6's save
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert latest_checkpoint(tmp_path / "none") is None


def test_a_model_saved_without_its_stats_is_trained_again(finished_run, tmp_path):
    """A kill between saving M3 and writing dpo2's stats must not leave the stage 'done' without stats."""
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run[0], run_dir)
    stats = run_dir / "dpo2" / "dpo.stats.json"
    expected = json.loads(stats.read_text())
    stats.unlink()
    result = invoke("run", "--resume", run_dir)
    assert result.exit_code == 0, result.output
    assert result.output.count("already complete, skipped") == 14 and "[dpo2] started" in result.output
    assert {k: v for k, v in json.loads(stats.read_text()).items() if k != "seconds"} == {
        k: v for k, v in expected.items() if k != "seconds"
    } | {
        "model": str(run_dir / "models" / "M3"),
        "policy": str(run_dir / "models" / "M2"),
        "reference": str(run_dir / "models" / "M2"),
    }
