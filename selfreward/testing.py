"""A tiny randomly initialised Llama with a small BPE tokenizer (no download), and a loop config
sized for it: what the tests and the kill campaign (bench/kill_campaign.py) run on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer() -> Any:
    """A 512-token byte-level BPE trained on a few words, with a ChatML template (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = "the a of to and is in for with on how what why explain write list describe answer response user score task".split()
    corpus = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12)) for i in range(200)]
    corpus += ["Score: 0 1 2 3 4 5", "Task 1: Task 2: Task 9:"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def special_token_ids(tokenizer: Any) -> dict[str, Any]:
    """A model config's bos/eos/pad ids from its tokenizer."""
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def build_tiny_model(directory: Path, seed: int = 0, head_dim: int = 8) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=4 * head_dim,  # the tests' head_dim 8 is fastest; vLLM's CPU attention has no kernel for it
        intermediate_size=8 * head_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        **special_token_ids(tokenizer),
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    # A random model almost never ends a sequence; a bias on EOS gives it finished answers of
    # ~15 tokens, like a real model's (prompts parse as complete tasks, judgments end).
    model.generation_config.sequence_bias = [[[tokenizer.eos_token_id], 3.5]]
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_loop_yaml(model: Path) -> str:
    """A config for the tiny model: small sizes, digit-probability fallback so pairs exist."""
    return f"""
base: demo
model: {{name_or_path: "{model}"}}
engine: {{batch_size: 2}}
eft: {{max_groups: 6}}
prompts: {{generator: "{model}", num_prompts: 3, requests_per_round: 4, max_rounds: 4, min_words: 1, max_new_tokens: 40, rouge_threshold: 0.99}}
candidates: {{max_new_tokens: 40}}
judge: {{k: 3, max_new_tokens: 40, fallback: fallback}}
# A random model's digit-probability scores differ by noise only: keep any non-zero margin so the
# loop has pairs to train on (tests assert the margins it reports, not that they mean anything).
pairs: {{min_margin: 0.0}}
# The tiny tokenizer spells most English words letter by letter: room for whole examples. A random
# model's EFT judgments rarely agree with the human ranking: M1 trains on the IFT examples too, with
# their own answers (a random model's greedy answers never end, so self-distillation keeps none).
sft: {{batch_size: 4, max_length: 4096, epochs: 1, m1_epochs: null, m1_with_ift: true, m1_self_distill: false}}
dpo: {{batch_size: 4, max_length: 4096}}
"""
