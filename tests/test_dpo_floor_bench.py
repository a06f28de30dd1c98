"""bench/dpo_floor.py times the log-probs DPO trains on: padding changes nothing, and it runs on the tiny model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfreward.models import load_model, load_tokenizer

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def floor(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import dpo_floor

    return dpo_floor


def test_answer_log_probs_are_the_models_own_padded_or_not(floor, tiny_model):
    tokenizer = load_tokenizer(str(tiny_model), 256)
    model = load_model(str(tiny_model), torch.float32, "cpu")
    prompt, answers = floor.tokenized(
        tokenizer, {"prompt": "explain the tides", "chosen": "the moon pulls the sea", "rejected": "no"}
    )
    assert len(answers[0]) > len(answers[1]) > 0
    padded = floor.answer_logps(model, prompt, answers, tokenizer.pad_token_id)
    alone = torch.cat([floor.answer_logps(model, prompt, [a], tokenizer.pad_token_id) for a in answers])
    direct = []
    for answer in answers:
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1]
        direct.append(torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(answer).unsqueeze(-1)).sum())
    assert torch.allclose(padded, torch.stack(direct), atol=1e-4) and torch.allclose(alone, padded, atol=1e-4)


def test_the_bench_prints_one_row_per_mode(tiny_model, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        '{"prompt": "explain the tides", "chosen": "the moon pulls the sea", "rejected": "no"}\n' * 2, encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, str(BENCH / "dpo_floor.py"), "--model", str(tiny_model), "--pairs", str(pairs)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"DPO passes on .*: 2 pairs, \d+ tokens per pair unpadded, \d+ torch threads", lines[0])
    assert [re.fullmatch(r"(\w+ \w+) +\d+\.\d\d s/pair +\d+\.\d\dx", line).group(1) for line in lines[1:]] == [
        "fp32 padded",
        "fp32 unpadded",
        "bf16 padded",
    ]
