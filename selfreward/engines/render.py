"""What local engines feed their model: a request rendered with the tokenizer's chat template, and
the token ids of single-token choices. Shared so the hf and vLLM engines see identical prompts."""

from __future__ import annotations

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
