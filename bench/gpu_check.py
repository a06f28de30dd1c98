"""The checks `bench/gpu_check.sh` runs on a GPU machine, one line of output each.

    python bench/gpu_check.py judge MODEL [--engines hf,vllm] [--groups 20]
    python bench/gpu_check.py lora-dpo MODEL
    python bench/gpu_check.py run MODEL OUT_DIR
    python bench/gpu_check.py llama8b WORK_DIR [--layers 32]

`judge`: the same judge requests (K=3 samples each, the demo ranked answers) through each engine,
judgments per second and the vllm/hf ratio. `lora-dpo`: one LoRA DPO step with bf16 weights; the
merged checkpoint's dtype and the peak GPU memory. `run`: the whole loop at the test suite's tiny
sizes (selfreward.testing) on MODEL with `engine.kind=vllm`, one iteration. MODEL: a checkpoint
directory (the script passes the embedded SmolLM2 converted to safetensors). `llama8b`: a random
bf16 model of Llama-3-8B's shape (`--layers` fewer for a smaller one) written to WORK_DIR, then one
LoRA SFT step, one LoRA DPO step (reference: the adapter off), the HF engine's judge batch, each with
its peak GPU memory, and the hand-over: GPU memory free with the HF engine loaded, after closing it,
and after a LoRA SFT step in a child process.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
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
            lora=LoRAConfig(),
            bf16=True,
            batch_size=8,
            micro_batch_size=4,
            learning_rate=5e-6,
            final_learning_rate=5e-7,
            max_length=4096,
            dropout=0.0,
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
        with safe_open(str(sorted((Path(tmp) / "merged").glob("*.safetensors"))[0]), "pt") as weights:
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


def gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"


def free_memory() -> str:
    gc.collect()
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    return f"{gib(free)} of {gib(total)}"


def build_llama8b(work: Path, layers: int) -> Path:
    """A random bf16 model of Llama-3-8B's shape with the tests' small tokenizer (ids stay in range)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfreward.testing import build_tiny_tokenizer, special_token_ids

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        dtype="bfloat16",
        **special_token_ids(tokenizer),
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.generation_config.max_length = None
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    del model
    return work / "model"


def lora_sft(model: str, stage_dir: Path, child: bool) -> dict:
    from selfreward.config import LoRAConfig, ModelConfig, SFTTrainingConfig
    from selfreward.seed_data import load_ift
    from selfreward.stages.sft import TrainSFT
    from selfreward.steps import run_step

    examples = [(e.prompt, e.response) for e in load_ift(["demo"])[0][:4]]
    config = SFTTrainingConfig(lora=LoRAConfig(), bf16=True, batch_size=4, micro_batch_size=2, max_length=4096)
    step = TrainSFT(
        "sft", ModelConfig(name_or_path=model), config, model, examples, stage_dir, stage_dir / "merged", 0, child
    )
    return run_step(step)


def llama8b(work: Path, layers: int) -> None:
    from selfreward.config import load_config
    from selfreward.engines import make_engine
    from selfreward.engines.base import Request

    started = time.perf_counter()
    model = str(build_llama8b(work, layers))
    params = sum(f.stat().st_size for f in Path(model).glob("*.safetensors")) / 2
    print(
        f"llama8b model: {layers} layers, {params / 1e9:.2f}B parameters (bf16), built in {time.perf_counter() - started:.0f} s"
    )
    torch.cuda.reset_peak_memory_stats()
    stats = lora_sft(model, work / "sft", child=False)
    peak = torch.cuda.max_memory_allocated()
    print(
        f"lora sft: {stats['steps']} step(s), loss {stats.get('loss_first')}, peak GPU memory {gib(peak)}, {stats['seconds']} s"
    )
    shutil.rmtree(work / "sft")  # 16 GB merged: the disk holds few
    torch.cuda.reset_peak_memory_stats()
    print(lora_dpo(model))
    torch.cuda.reset_peak_memory_stats()
    print(judge(model, ["hf"], 4) + f", peak GPU memory {gib(torch.cuda.max_memory_allocated())}")
    engine = make_engine(load_config("demo", [f"model.name_or_path={model}"]), model)
    engine.generate([Request((("user", "Say hi."),))], Sampling(0.0, 1.0, 4), 0)
    with_engine = free_memory()
    engine.close()
    closed = free_memory()
    stats = lora_sft(model, work / "sft-child", child=True)
    print(
        f"hand-over: GPU free with the HF engine loaded {with_engine}; after close {closed}; after a LoRA SFT step "
        f"in a child process (pid {stats.get('pid')}, {stats['seconds']} s) {free_memory()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=["judge", "lora-dpo", "run", "llama8b"])
    parser.add_argument("model")
    parser.add_argument("out", nargs="?", default="gpu-check-run")
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--layers", type=int, default=32, help="llama8b: layers of the 8B shape (32)")
    args = parser.parse_args()
    if args.check == "judge":
        print(judge(args.model, args.engines.split(","), args.groups))
    elif args.check == "llama8b":
        llama8b(Path(args.model), args.layers)
    elif args.check == "lora-dpo":
        print(lora_dpo(args.model))
    else:
        print(run(args.model, args.out))


if __name__ == "__main__":
    main()
