"""The checks `bench/gpu_check.sh` runs on a GPU machine, one line of output each.

    python bench/gpu_check.py judge MODEL [--engines hf,vllm] [--groups 20]
    python bench/gpu_check.py lora-dpo MODEL
    python bench/gpu_check.py run MODEL OUT_DIR

`judge`: the same judge requests (K=3 samples each, the demo ranked answers) through each engine,
judgments per second and the vllm/hf ratio. `lora-dpo`: one LoRA DPO step with bf16 weights; the
merged checkpoint's dtype and the peak GPU memory. `run`: the whole loop at the test suite's tiny
sizes (selfreward.testing) on MODEL with `engine.kind=vllm`, one iteration. MODEL: a checkpoint
directory (the script passes the embedded SmolLM2 converted to safetensors).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from selfreward.config import load_config
from selfreward.engines import Sampling, make_engine
from selfreward.judging import point_judgment
from selfreward.judging.responses import JudgeItem, judge_requests
from selfreward.seed_data import load_ranked


def judge(model: str, engines: list[str], groups: int) -> str:
    config = load_config("demo", [f"model.name_or_path={model}"])
    judgment = point_judgment(config.judge)
    items = [
        JudgeItem(str(i), {"instruction": g.prompt, "response": r.text}, {})
        for i, (g, r) in enumerate((g, r) for g in load_ranked(["demo"])[0][:groups] for r in g.responses)
    ]
    sampling = Sampling(config.judge.temperature, config.judge.top_p, config.judge.max_new_tokens)
    rates = {}
    for kind in engines:
        engine = make_engine(
            config.model_copy(update={"engine": config.engine.model_copy(update={"kind": kind})}), model
        )
        requests = [w.request for w in judge_requests(engine, judgment, items, config.judge.max_new_tokens)]
        try:
            started = time.perf_counter()
            judgments = [
                c
                for group in engine.generate_n(requests, config.judge.k, sampling, list(range(len(requests))))
                for c in group
            ]
            rates[kind] = len(judgments) / (time.perf_counter() - started)
            parsed = sum(judgment.scale.parse(c.text) is not None for c in judgments)
        finally:
            engine.close()
        torch.cuda.empty_cache()
        rates[f"{kind}_parsed"] = parsed / len(judgments)
    figures = ", ".join(
        f"{kind} {rates[kind]:.1f} judgments/s (parsed {rates[f'{kind}_parsed']:.0%})" for kind in engines
    )
    ratio = f", vllm/hf {rates['vllm'] / rates['hf']:.1f}x" if {"hf", "vllm"} <= rates.keys() else ""
    return f"judge: {len(requests)} requests x K={config.judge.k}: {figures}{ratio}"


def lora_dpo(model: str) -> str:
    from safetensors import safe_open

    from selfreward.config import DPOTrainingConfig, LoRAConfig, ModelConfig
    from selfreward.stages.dpo import TrainDPO
    from selfreward.steps import run_step

    rows = [
        {"prompt": g.prompt, "chosen": g.responses[0].text, "rejected": g.responses[-1].text}
        for g in load_ranked(["demo"])[0][:8]
    ]
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        config = DPOTrainingConfig(
            lora=LoRAConfig(), bf16=True, batch_size=8, micro_batch_size=4, learning_rate=5e-6, final_learning_rate=5e-7
        )
        stats = run_step(
            TrainDPO(
                "dpo",
                ModelConfig(name_or_path=model),
                config,
                model,
                None,
                pairs,
                Path(tmp) / "dpo",
                Path(tmp) / "merged",
                0,
            )
        )
        with safe_open(str(Path(tmp) / "merged" / "model.safetensors"), "pt") as weights:
            dtype = weights.get_tensor(next(iter(weights.keys()))).dtype
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return f"lora dpo: {stats['steps']} step(s), bf16 {stats['bf16']}, loss {stats.get('loss_first')}, merged checkpoint {dtype}, peak GPU memory {peak:.2f} GiB, {stats['seconds']} s"


def run(model: str, out: str) -> str:
    from selfreward.testing import tiny_loop_yaml

    config = Path(out).with_suffix(".yaml")
    config.write_text(tiny_loop_yaml(Path(model)), encoding="utf-8")
    started = time.perf_counter()
    sets = ["engine.kind=vllm", "loop.iterations=1", "dpo.bf16=true"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfreward",
            "run",
            str(config),
            "--out",
            out,
            *[a for s in sets for a in ("--set", s)],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return f"run (vllm): FAILED exit {done.returncode} after {seconds:.0f} s: {(done.stderr.strip().splitlines() or ['no output'])[-1]}"
    summary = json.loads((Path(out) / "summary.json").read_text())
    pairs = [it["pairs"] for it in summary["iterations"]]
    return f"run (vllm): ok in {seconds:.0f} s, models {' '.join(summary['models'])}, pairs per iteration {pairs}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=["judge", "lora-dpo", "run"])
    parser.add_argument("model")
    parser.add_argument("out", nargs="?", default="gpu-check-run")
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--groups", type=int, default=20)
    args = parser.parse_args()
    if args.check == "judge":
        print(judge(args.model, args.engines.split(","), args.groups))
    elif args.check == "lora-dpo":
        print(lora_dpo(args.model))
    else:
        print(run(args.model, args.out))


if __name__ == "__main__":
    main()
