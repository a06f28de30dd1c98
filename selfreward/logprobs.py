"""Log-probabilities of answers under a model, tokenized as TRL's DPOTrainer tokenizes a pair.

The prompt is the chat template with the generation prompt; an answer's tokens are what the
template adds after it for the whole exchange (its end-of-turn token included). What DPO's
implicit reward measures: beta * (log pi(y|x) - log pi_ref(y|x)) (`implicit_rewards`).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import torch

from selfreward.config import ModelConfig
from selfreward.models import load_model, load_tokenizer, loading_switches, pick_device, pick_dtype, resolve_model


@dataclass(frozen=True)
class Scored:
    """One answer's summed token log-probability and its token count."""

    logp: float
    tokens: int


def _ids(tokenizer: Any, messages: list[dict[str, str]], **options: Any) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, **options)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenized(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): the answer starts where prompt and prompt + answer diverge (as TRL's DPO)."""
    question = [{"role": "user", "content": prompt}]
    head = _ids(tokenizer, question, add_generation_prompt=True)
    whole = _ids(tokenizer, [*question, {"role": "assistant", "content": answer}])
    shared = next((i for i, (a, b) in enumerate(zip(head, whole)) if a != b), min(len(head), len(whole)))
    return whole[:shared], whole[shared:]


@torch.inference_mode()
def answer_logprobs(model: Any, tokenizer: Any, items: list[tuple[str, str]], batch_size: int = 4) -> list[Scored]:
    """Summed log-probabilities of each (prompt, answer)'s answer tokens under `model` (eval mode),
    right-padded batches of `batch_size` sequences."""
    model.eval()
    rows = [tokenized(tokenizer, prompt, answer) for prompt, answer in items]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[Scored] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        sequences = [p + a for p, a in batch]
        width = max(len(s) for s in sequences)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        for row, (prompt, answer) in enumerate(batch):
            predicted = logits[row, len(prompt) - 1 : len(prompt) - 1 + len(answer)].float()
            target = torch.tensor(answer, device=device).unsqueeze(-1)
            out.append(Scored(float(torch.log_softmax(predicted, -1).gather(-1, target).sum()), len(answer)))
    return out


def implicit_rewards(
    policy: list[Scored], reference: list[Scored], beta: float, per_token: bool = False
) -> list[float]:
    """beta * (log pi(y|x) - log pi_ref(y|x)) per answer; `per_token` divides by the answer's tokens."""
    return [beta * (p.logp - r.logp) / (p.tokens if per_token else 1) for p, r in zip(policy, reference)]


def score_with_model(
    model_config: ModelConfig, name_or_path: str, items: list[tuple[str, str]], max_length: int
) -> list[Scored]:
    """`answer_logprobs` under one model, loaded alone and released after (fp32 on a CPU, where the
    differences that matter -- DPO margins, implicit rewards -- are below bf16's resolution)."""
    device = pick_device(model_config.device)
    path = resolve_model(name_or_path)
    dtype = torch.float32 if device == "cpu" else pick_dtype(model_config.dtype, device)
    model = load_model(path, dtype, device, **loading_switches(model_config))
    try:
        return answer_logprobs(model, load_tokenizer(path, max_length, model_config.trust_remote_code), items)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
