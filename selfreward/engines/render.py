"""What local engines feed their model and how they sample it: a request rendered with the tokenizer's
chat template, the token ids of single-token choices, and the checkpoint's own sampling settings
(`ModelSampling`). Shared so the hf and vLLM engines see identical prompts and apply the same logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfreward.engines.base import Request


def render_request(tokenizer: Any, request: Request) -> str:
    """The chat rendered with the tokenizer's template and the generation prompt, then `request.prefix`."""
    messages = [{"role": role, "content": content} for role, content in request.messages]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + request.prefix


def choice_token_ids(tokenizer: Any, choices: list[str]) -> list[list[int]]:
    """For each choice, its single-token spellings with and without a leading space."""
    ids = []
    for choice in choices:
        variants = []
        for spelling in (choice, " " + choice):
            tokens = tokenizer.encode(spelling, add_special_tokens=False)
            if len(tokens) == 1 and tokens[0] not in variants:
                variants.append(tokens[0])
        if not variants:
            raise ValueError(f"choice {choice!r} is not a single token for this tokenizer")
        ids.append(variants)
    return ids


@dataclass(frozen=True)
class ModelSampling:
    """What both engines apply on top of a request's `Sampling`, read from the checkpoint: the tokens
    that end a sequence (its generation config's EOS ids and the tokenizer's), and its generation
    config's single-token biases and repetition penalty. The hf engine applies them as transformers'
    logits processors, the vLLM engine as `SamplingParams(stop_token_ids, logit_bias, repetition_penalty)`:
    the same logits either way (greedy answers are the same tokens)."""

    eos_ids: list[int]
    logit_bias: dict[int, float]
    repetition_penalty: float
    multi_token_biases: int = 0
    """Biased sequences of several tokens: transformers applies them, vLLM cannot (its engine refuses them)."""


def model_sampling(tokenizer: Any, generation_config: Any) -> ModelSampling:
    eos = generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.append(tokenizer.eos_token_id)
    biases = generation_config.sequence_bias or []
    pairs = biases.items() if isinstance(biases, dict) else [(tuple(seq), value) for seq, value in biases]
    single = {int(seq[0]): float(value) for seq, value in pairs if len(seq) == 1}
    return ModelSampling(
        eos_ids, single, float(generation_config.repetition_penalty or 1.0), sum(1 for seq, _ in pairs if len(seq) != 1)
    )
