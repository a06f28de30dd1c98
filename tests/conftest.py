"""Fixtures: a tiny randomly initialised Llama (selfreward.testing), its loop config, shared data, a CLI helper."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfreward.testing import build_tiny_model, tiny_loop_yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_AIFT = (
    "engine.batch_size=4",
    "prompts.num_prompts=3",
    "prompts.requests_per_round=4",
    "prompts.max_rounds=4",
    "prompts.min_words=1",
    "prompts.max_new_tokens=40",
    "prompts.rouge_threshold=0.99",
    "candidates.max_new_tokens=40",
    "judge.max_new_tokens=12",
    "judge.k=2",
    "judge.fallback=fallback",
)
"""Overrides for one AIFT iteration of the tiny model in seconds: 3 prompts, short answers, K=2."""


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def loop_config(tiny_model, tmp_path_factory):
    """A YAML config for the tiny model: small sizes, digit-probability fallback so pairs exist."""
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(tiny_loop_yaml(tiny_model))
    return path


def invoke(*args):
    from selfreward.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def finished_run(loop_config, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    result = invoke("run", loop_config, "--out", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir, result.output
