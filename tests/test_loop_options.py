"""One tiny-model iteration with pairs.policy=length_control and dpo.rpo_alpha: what they select and pass on."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from conftest import invoke

from selfreward.judging.responses import response_score
from selfreward.records import read_jsonl

RHO = 0.3


def test_length_control_and_rpo_alpha_in_the_loop(loop_config, tmp_path):
    run_dir = tmp_path / "run"
    result = invoke(
        "run",
        loop_config,
        "--out",
        run_dir,
        "--set",
        "loop.iterations=1",
        "--set",
        "sft.baseline=false",
        "--set",
        "eft.judge=m0",
        "--set",
        "pairs.policy=length_control",
        "--set",
        f"pairs.rho={RHO}",
        "--set",
        "dpo.rpo_alpha=0.5",
        "--set",
        "dpo.reference=initial",
    )
    assert result.exit_code == 0, result.output
    iter_dir = run_dir / "iter1"
    stats = json.loads((iter_dir / "pairs.stats.json").read_text())
    assert stats["policy"] == {"name": "length_control", "rho": RHO} and stats["length_unit"] == "tokens"
    pairs = read_jsonl(iter_dir / "pairs.jsonl")
    assert pairs and stats["pairs"] == len(pairs)

    judgments = defaultdict(list)
    for j in read_jsonl(iter_dir / "judgments.jsonl"):
        judgments[j["candidate_id"]].append(j)
    eligible = defaultdict(list)  # prompt id -> (score, tokens, candidate id) of the finished, scored candidates
    for c in read_jsonl(iter_dir / "candidates.jsonl"):
        found = response_score(judgments[c["id"]])
        if found is not None and c["finished"]:
            eligible[c["prompt_id"]].append((found[0], c["num_tokens"], c["id"]))
    for pair in pairs:
        scored = eligible[pair["id"]]
        top, bottom = max(s for s, _, _ in scored), min(s for s, _, _ in scored)
        band = RHO * (top - bottom)
        near_top = [(tokens, cid) for s, tokens, cid in scored if s >= top - band]
        near_bottom = [(tokens, cid) for s, tokens, cid in scored if s <= bottom + band]
        assert pair["chosen_length"] == min(near_top)[0] and (pair["chosen_length"], pair["chosen_id"]) in near_top
        assert (
            pair["rejected_length"] == max(near_bottom)[0]
            and (pair["rejected_length"], pair["rejected_id"]) in near_bottom
        )
    assert stats["mean_chosen_length"] == pytest.approx(sum(p["chosen_length"] for p in pairs) / len(pairs), abs=5e-4)

    dpo = json.loads((run_dir / "dpo1" / "dpo.stats.json").read_text())
    assert (dpo["loss_type"], dpo["loss_weights"]) == (["sigmoid", "sft"], [1.0, 0.5])
    assert dpo["reference"] == str(run_dir / "models" / "M1") and dpo["policy"] == str(run_dir / "models" / "M1")
    assert json.loads((run_dir / "summary.json").read_text())["models"] == ["M1", "M2"]
