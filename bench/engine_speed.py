"""Judge and candidate throughput of the HF engine: plain batched `generate` vs the shared-prefix sampler.

Both paths get the same requests in one run, one after the other, as in an AIFT iteration:
- candidates: N answers to each of the first `--prompts` first-turn prompts of the oasst1
  validation split (../shared/data);
- judge: each of those answers (the shared path's) judged K times with the stage's judge prompt
  (shortened to fit as the stage does).
"plain" is today's path: each request repeated K (or N) times in batches of `engine.batch_size`
sequences through `model.generate`, running until EOS or `max_new_tokens` (what the judge
stage did before the stop at `Score: N`). "shared" is `HFEngine.generate_n` with the stage's
sampling, stop strings included. The last line reads `judge speedup: <ratio>x`.

    python bench/engine_speed.py [--model runs/demo/models/M1]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable

import torch
from shared_data import OASST1_VALIDATION_GROUPS

from selfreward.batches import derive_seed
from selfreward.config import ModelConfig
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.engines.hf import HFEngine
from selfreward.judging.additive_5pt import ADDITIVE_5PT
from selfreward.judging.responses import JudgeItem, PointJudgment, judge_requests
from selfreward.seed_data import load_ranked

Generate = Callable[[list[Request], int, Sampling, list[int]], list[list[Completion]]]


def timed(
    generate: Generate, requests: list[Request], n: int, sampling: Sampling
) -> tuple[list[list[Completion]], float]:
    seeds = [derive_seed(0, f"bench-{i}") for i in range(len(requests))]
    started = time.perf_counter()
    groups = generate(requests, n, sampling, seeds)
    return groups, time.perf_counter() - started


def judge_summary(completions: list[Completion]) -> str:
    scores = [ADDITIVE_5PT.read(c.text) for c in completions]
    strict = sum(1 for s in scores if s and s.method == "text" and s.value is not None)
    valid = [s.value for s in scores if s and s.value is not None]
    histogram = Counter(round(v) for v in valid)
    return (
        f"parse rate {len(valid) / len(completions):.1%} (strict {strict / len(completions):.1%}), histogram 0-5 "
        + "/".join(str(histogram.get(d, 0)) for d in range(6))
    )


def compare(
    label: str, engine: HFEngine, requests: list[Request], n: int, plain: Sampling, shared: Sampling
) -> tuple[float, list[list[Completion]]]:
    """Run both paths on the same requests and print sequences/s and tokens/s; return the
    speed ratio and the shared path's completions."""
    rates: list[float] = []
    groups: list[list[Completion]] = []
    for name, generate, sampling in (
        ("plain", lambda *a: Engine.generate_n(engine, *a), plain),
        ("shared", engine.generate_n, shared),
    ):
        groups, seconds = timed(generate, requests, n, sampling)
        completions = [c for group in groups for c in group]
        tokens = sum(c.num_tokens for c in completions)
        rates.append(len(completions) / seconds)
        extra = (
            judge_summary(completions) if label == "judge" else f"unfinished {sum(not c.finished for c in completions)}"
        )
        print(
            f"{label} {name}: {len(completions)} in {seconds:.1f} s = {rates[-1]:.2f}/s, {tokens / seconds:.1f} generated tok/s, mean {tokens / len(completions):.1f} tokens; {extra}",
            flush=True,
        )
    return rates[1] / rates[0], groups


def anchors(engine: HFEngine, prompts: list[str], max_new_tokens: int) -> None:
    """Plain `generate` tok/s at batch 1 and 32, greedy, as the reference figures of docs/measurements.md."""
    sampling = Sampling(0.0, 1.0, max_new_tokens)
    for batch in (1, 32):
        requests = [Request.user(p) for p in (prompts * 32)[: 4 if batch == 1 else 32]]
        engine.batch_size = batch
        started = time.perf_counter()
        completions = engine.generate(requests, sampling, 0)
        seconds = time.perf_counter() - started
        print(
            f"anchor: plain generate at batch {batch}: {sum(c.num_tokens for c in completions) / seconds:.1f} tok/s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="judge and answer model (a trained M1 judges like the loop's)"
    )
    parser.add_argument("--ranked", default=str(OASST1_VALIDATION_GROUPS))
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32, help="engine.batch_size (sequences per batch)")
    parser.add_argument("--judge-max-new-tokens", type=int, default=96)
    parser.add_argument("--candidate-max-new-tokens", type=int, default=320)
    parser.add_argument("--anchors", action="store_true", help="also print plain generate tok/s at batch 1 and 32")
    parser.add_argument(
        "--judge-only", action="store_true", help="answers from the shared path alone, untimed; compare the judge only"
    )
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model}", flush=True)
    engine = HFEngine(ModelConfig(name_or_path=args.model), args.batch_size)
    prompts = [g.prompt for g in load_ranked([args.ranked])[0][: args.prompts]]
    if args.anchors:
        anchors(engine, prompts, 64)
        engine.batch_size = args.batch_size
    answer = Sampling(0.7, 0.9, args.candidate_max_new_tokens)
    print(
        f"candidates: {len(prompts)} prompts x N={args.n}, max {args.candidate_max_new_tokens} new tokens", flush=True
    )
    if args.judge_only:
        candidate_ratio, answers = (
            float("nan"),
            engine.generate_n([Request.user(p) for p in prompts], args.n, answer, list(range(len(prompts)))),
        )
    else:
        candidate_ratio, answers = compare(
            "candidates", engine, [Request.user(p) for p in prompts], args.n, answer, answer
        )
    answered = [
        JudgeItem(str(i), {"instruction": p, "response": c.text}, {})
        for i, (p, group) in enumerate(zip(prompts, answers))
        for c in group
    ]
    requests = [
        w.request for w in judge_requests(engine, PointJudgment.of(ADDITIVE_5PT), answered, args.judge_max_new_tokens)
    ]
    print(f"judge: {len(requests)} answers x K={args.k}, max {args.judge_max_new_tokens} new tokens", flush=True)
    plain = Sampling(0.7, 0.9, args.judge_max_new_tokens)
    judge_ratio, _ = compare(
        "judge", engine, requests, args.k, plain, Sampling(0.7, 0.9, args.judge_max_new_tokens, stop=ADDITIVE_5PT.stop)
    )
    print(f"candidates speedup: {candidate_ratio:.2f}x")
    print(f"judge speedup: {judge_ratio:.2f}x")


if __name__ == "__main__":
    main()
