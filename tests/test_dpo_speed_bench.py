"""The DPO speed knobs (dpo.precompute_ref_log_probs, dpo.micro_batch_size) reach TRL and keep the
losses; bench/dpo_speed.py runs its setups on the tiny model."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from selfreward.config import DPOTrainingConfig, ModelConfig
from selfreward.stages.dpo import TrainDPO, dpo_arguments

WORDS = "the a of to and is in for with on how what why explain write list describe answer response".split()


def write_pairs(path: Path, count: int) -> Path:
    """Pairs of different lengths, so a micro batch of several pads."""
    rows = [
        {
            "prompt": f"explain {WORDS[i]} and {WORDS[i + 1]}",
            "chosen": " ".join(WORDS[: 3 + 2 * i]),
            "rejected": " ".join(WORDS[i : i + 2]),
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_speed_keys_reach_trls_dpo_config(tmp_path):
    args = dpo_arguments(
        DPOTrainingConfig(precompute_ref_log_probs=True, micro_batch_size=4, batch_size=16), tmp_path, 0, "cpu"
    )
    assert (args.precompute_ref_log_probs, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
        True,
        4,
        4,
    )
    default = dpo_arguments(DPOTrainingConfig(), tmp_path, 0, "cpu")
    assert (
        default.precompute_ref_log_probs,
        default.per_device_train_batch_size,
        default.gradient_accumulation_steps,
    ) == (False, 1, 16)


@pytest.mark.parametrize("change", [{"precompute_ref_log_probs": True}, {"micro_batch_size": 2}])
def test_precomputed_reference_and_micro_batches_keep_the_losses(tiny_model, tmp_path, change):
    """Two optimizer steps at a learning rate that moves the tiny model: the first step's loss is
    ln 2 (policy = reference) and both steps match the plain setup's (stats round to 4 decimals)."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    model_config = ModelConfig(name_or_path=str(tiny_model), device="cpu")
    losses = {}
    for name, keys in (("plain", {}), ("changed", change)):
        config = DPOTrainingConfig(
            batch_size=2, dropout=0.0, learning_rate=1e-3, final_learning_rate=1e-4, max_length=256, **keys
        )
        stats = TrainDPO(
            "dpo", model_config, config, str(tiny_model), None, pairs, tmp_path / name, tmp_path / f"model-{name}", 0
        ).train_here()
        losses[name] = (stats["loss_first"], stats["loss_last"])
    assert losses["plain"][0] == pytest.approx(math.log(2), abs=1e-4)
    assert abs(losses["plain"][1] - math.log(2)) > 1e-3  # the second step trains on a changed policy
    assert losses["changed"] == pytest.approx(losses["plain"], abs=1e-4 + 1e-4)  # 1e-4 apart at most, plus rounding


def test_the_bench_runs_its_setups_on_the_tiny_model(tiny_model, tmp_path):
    bench = Path(__file__).resolve().parents[1] / "bench" / "dpo_speed.py"
    pairs = write_pairs(tmp_path / "pairs.jsonl", 4)
    command = [
        sys.executable,
        str(bench),
        "--model",
        str(tiny_model),
        "--pairs",
        str(pairs),
        "--count",
        "4",
        "--batch-size",
        "2",
        "--setups",
        "precompute,mb2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(rf"DPO on {re.escape(str(tiny_model))}: 4 pairs, batch 2, dropout 0\.0, seed 0", lines[0])
    assert re.fullmatch(r"\d+ torch threads; correct: .* best correct setup: \S+", lines[-2])
    rows = {line.split()[0]: line.split() for line in lines[2:-2]}
    assert list(rows) == ["today", "precompute", "mb2"]
    for row in rows.values():
        s_per_pair, loss_diff, first_loss = float(row[1]), float(row[6]), float(row[7])
        assert s_per_pair > 0 and loss_diff <= 1e-3 and first_loss == pytest.approx(math.log(2), abs=1e-4)
    assert re.fullmatch(r"dpo s/pair: \d+\.\d\d -> \d+\.\d\d", lines[-1])
