"""The least compute a DPO step needs here: one pair's passes in plain torch, without the Trainer.

    python bench/dpo_floor.py [--model smollm2-135m-instruct] [--pairs FILE] [--count 24]

Per pair, what every DPO step must do whatever the setup: the policy's forward and backward over
chosen and rejected, and the reference's forward over both (no optimizer, no data collation, no
logging). The LM head scores only the answers' tokens, as the stage's does on CPU. Modes:
- fp32 padded: chosen and rejected in one batch padded to the longer, as TRL's DPOTrainer runs them;
- fp32 unpadded: each in its own pass, no padding (the most an unpadded trainer could save);
- bf16 padded: the same as fp32 padded under bf16 autocast (fp32 weights), what `dpo.bf16: true` does.
Pairs are read as in bench/dpo_speed.py. Compare the s/pair with that script's, which adds the
Trainer, the optimizer and the reference copy to these passes.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from dpo_speed import candidate_pairs, fitting_pairs
from shared_data import OASST1_VALIDATION_GROUPS

from selfreward.models import load_model, load_tokenizer, resolve_model
from selfreward.training import set_dropout

MODES = ("fp32 padded", "fp32 unpadded", "bf16 padded")
BETA = 0.1  # dpo.beta (the paper's); the passes cost the same at any beta


def tokenized(tokenizer: Any, pair: dict[str, str]) -> tuple[list[int], list[list[int]]]:
    """The prompt's tokens with the generation prompt, and each answer's tokens as the template ends it."""

    def tokens(messages: list[dict[str, str]], **options: Any) -> list[int]:
        return list(
            tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, **options), add_special_tokens=False)[
                "input_ids"
            ]
        )

    question = [{"role": "user", "content": pair["prompt"]}]
    prompt = tokens(question, add_generation_prompt=True)
    return prompt, [
        tokens([*question, {"role": "assistant", "content": pair[key]}])[len(prompt) :]
        for key in ("chosen", "rejected")
    ]


def answer_logps(model: Any, prompt: list[int], answers: list[list[int]], pad_id: int) -> torch.Tensor:
    """Sum of each answer's token log-probs, the answers batched and right-padded to the longer."""
    rows = [prompt + a for a in answers]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    sums = []
    for row, answer in enumerate(answers):
        start = len(prompt) - 1  # the position that predicts the answer's first token
        logits = model.lm_head(hidden[row, start : start + len(answer)]).float()
        sums.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(answer).unsqueeze(-1)).sum())
    return torch.stack(sums)


def pair_step(model: Any, prompt: list[int], answers: list[list[int]], pad_id: int, padded: bool) -> None:
    """Policy forward + backward and reference forward for one pair (the reference: the same weights)."""
    batches = [answers] if padded else [[a] for a in answers]
    with torch.no_grad():
        reference = torch.cat([answer_logps(model, prompt, b, pad_id) for b in batches])
    policy = torch.cat([answer_logps(model, prompt, b, pad_id) for b in batches])
    loss = -torch.nn.functional.logsigmoid(BETA * ((policy[0] - reference[0]) - (policy[1] - reference[1])))
    loss.backward()
    model.zero_grad(set_to_none=True)


def seconds_per_pair(model: Any, pairs: list[tuple[list[int], list[list[int]]]], pad_id: int, mode: str) -> float:
    """Mean seconds of `pair_step` over `pairs` in `mode`, after one untimed warm-up step in that mode."""
    padded = mode.endswith(" padded")
    with torch.autocast("cpu", dtype=torch.bfloat16) if mode.startswith("bf16") else nullcontext():
        pair_step(model, *pairs[0], pad_id, padded)
        started = time.perf_counter()
        for prompt, answers in pairs:
            pair_step(model, prompt, answers, pad_id, padded)
        return (time.perf_counter() - started) / len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="model id, directory or the embedded smollm2-135m-instruct"
    )
    parser.add_argument(
        "--pairs", help="a pairs.jsonl (prompt, chosen, rejected); default: oasst1 groups in ../shared/data"
    )
    parser.add_argument("--count", type=int, default=24, help="pairs to time")
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per prompt + answer (dpo.max_length)")
    args = parser.parse_args()
    candidates = candidate_pairs(Path(args.pairs) if args.pairs else None)
    if candidates is None:
        print(f"skipped: {OASST1_VALIDATION_GROUPS} is missing (pass --pairs FILE)")
        return
    path = resolve_model(args.model)
    tokenizer = load_tokenizer(path, args.max_length)
    pairs = [tokenized(tokenizer, p) for p in fitting_pairs(candidates, path, args.max_length, args.count)]
    model = load_model(path, torch.float32, "cpu")
    model.train()
    set_dropout(model, 0.0)
    tokens = sum(2 * len(prompt) + sum(len(a) for a in answers) for prompt, answers in pairs)
    print(
        f"DPO passes on {args.model}: {len(pairs)} pairs, {tokens / len(pairs):.0f} tokens per pair unpadded, {torch.get_num_threads()} torch threads"
    )
    first = 0.0
    for mode in MODES:
        seconds = seconds_per_pair(model, pairs, tokenizer.pad_token_id, mode)
        first = first or seconds
        print(f"{mode:<15}{seconds:>7.2f} s/pair{first / seconds:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
