"""Sampling for the HF engine that prefills shared text once and drops finished sequences.

`generate` in transformers prefills every row of a batch in full and steps every row until the
longest one ends. For the judge that is wasteful three times over: all judge prompts start with
the same ~450-token rubric, each candidate's K judgments repeat one prompt, and one long
judgment keeps a whole batch stepping. `sample_group` instead

1. prefills the token prefix the batch's prompts share once, at batch size 1;
2. prefills each prompt's remaining tokens once, on copies of that cache (pads sit between the
   shared prefix and a shorter prompt's own tokens, masked out);
3. copies each prompt's cache for its `n` samples and decodes them together, each sample drawing
   from its own seeded generator (records do not depend on which batch a request landed in);
4. ends a sample at end-of-sequence, at a stop string (kept in the text) or at the token limit,
   and removes finished samples from the batch once a quarter of it has finished.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, GenerationConfig, LogitsProcessorList
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    TemperatureLogitsWarper,
)

from selfreward.engines.base import Sampling


@dataclass
class Sample:
    tokens: list[int]
    finished: bool
    stopped_at: str | None = None
    """The stop string that ended this sample, if one did."""


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Length of the token prefix all rows share, leaving every row at least one token of its own."""
    limit = min(len(r) for r in rows) - 1
    length = 0
    while length < limit and all(r[length] == rows[0][length] for r in rows):
        length += 1
    return length


def logits_processors(config: GenerationConfig, sampling: Sampling) -> LogitsProcessorList:
    """The model's own sequence bias and repetition penalty, then temperature (top-p is `nucleus`)."""
    processors = LogitsProcessorList()
    if config.sequence_bias:
        processors.append(SequenceBiasLogitsProcessor(sequence_bias=config.sequence_bias))
    if config.repetition_penalty not in (None, 1.0):
        processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
    if sampling.temperature > 0:
        processors.append(TemperatureLogitsWarper(sampling.temperature))
    return processors


NUCLEUS_CANDIDATES = 256
"""Tokens `nucleus` sorts first; a row whose top-p mass lies beyond them is sorted in full."""


def nucleus(scores: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens top-p sampling keeps (as TopPLogitsWarper: the most probable tokens until their
    mass reaches top_p, at least one) and their renormalised probabilities, per row: (ids, probs),
    padded with zero-probability entries. Only the top NUCLEUS_CANDIDATES are sorted unless a row
    needs more, which gives the same sets as sorting the whole vocabulary, 100x cheaper."""
    probs = torch.softmax(scores, dim=-1)
    if top_p >= 1:
        return torch.arange(probs.shape[-1]).expand_as(probs), probs
    k = min(NUCLEUS_CANDIDATES, probs.shape[-1])
    top, ids = probs.topk(k, dim=-1)
    if k < probs.shape[-1] and bool((top.sum(dim=-1) < top_p).any()):
        top, ids = probs.sort(dim=-1, descending=True)
    before = top.cumsum(dim=-1) - top  # mass of the more probable tokens
    top = top.masked_fill(before >= top_p, 0.0)  # the most probable token always stays (before = 0)
    return ids, top / top.sum(dim=-1, keepdim=True)


class StopWatch:
    """Finds the first stop string in a sample's recent tokens (decoding only its tail)."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...]):
        self.tokenizer = tokenizer
        self.stops = stops
        self.tail = max((len(s) for s in stops), default=0) + 2

    def check(self, tokens: list[int]) -> str | None:
        if not self.stops:
            return None
        text = self.tokenizer.decode(tokens[-self.tail :], skip_special_tokens=True)
        return next((s for s in self.stops if s in text), None)


@functools.cache
def cache_keyword(model_class: Any) -> str:
    """How the model's forward names the KV cache: `cache` (transformers >= 5.21, which still maps the
    old name, with a warning) or `past_key_values` (5.20, the newest the vllm extra allows)."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_argument(model: Any, cache: DynamicCache) -> dict[str, DynamicCache]:
    return {cache_keyword(model.__class__): cache}


def prefill(
    model: Any, rows: list[list[int]], pad_id: int
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prefill the rows' shared prefix once, then each row's own tokens.
    Returns (cache, attention mask, next position per row, last logits per row)."""
    device = model.device
    shared = shared_prefix_length(rows)
    cache = DynamicCache(config=model.config)
    if shared:
        model(
            input_ids=torch.tensor([rows[0][:shared]], device=device),
            **cache_argument(model, cache),
            use_cache=True,
            logits_to_keep=1,
        )
        cache.batch_repeat_interleave(len(rows))
    own = [r[shared:] for r in rows]
    width = max(len(o) for o in own)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    own_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, tokens in enumerate(own):
        input_ids[i, width - len(tokens) :] = torch.tensor(tokens)
        own_mask[i, width - len(tokens) :] = 1
    positions = (shared + own_mask.cumsum(-1) - 1).clamp_min(shared)
    mask = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), own_mask], dim=-1).to(device)
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=mask,
        position_ids=positions.to(device),
        **cache_argument(model, cache),
        use_cache=True,
        logits_to_keep=1,
    )
    return cache, mask, positions[:, -1].to(device) + 1, out.logits[:, -1, :].float()


def draw(
    logits: torch.Tensor,
    history: torch.Tensor,
    processors: LogitsProcessorList,
    top_p: float,
    generators: list[torch.Generator] | None,
) -> list[int]:
    """One token per row: greedy without generators, else a top-p draw from each row's own generator."""
    scores = processors(history, logits)  # type: ignore[arg-type]  # LongTensor is not a runtime type
    if generators is None:
        return scores.argmax(dim=-1).tolist()
    ids, probs = (t.cpu() for t in nucleus(scores, top_p))
    return [int(ids[i, torch.multinomial(probs[i], 1, generator=g)]) for i, g in enumerate(generators)]


@torch.inference_mode()
def sample_group(
    model: Any,
    rows: list[list[int]],
    n: int,
    sampling: Sampling,
    seeds: list[int],
    eos_ids: list[int],
    pad_id: int,
    stop: StopWatch,
) -> list[list[Sample]]:
    """`n` samples for each row of prompt tokens; row i's j-th sample draws from seed (seeds[i], j)."""
    cache, mask, positions, logits = prefill(model, rows, pad_id)
    if n > 1:
        cache.batch_repeat_interleave(n)
        mask, positions, logits = (t.repeat_interleave(n, dim=0) for t in (mask, positions, logits))
    total = len(rows) * n
    generators = None
    if sampling.temperature > 0:
        generators = [torch.Generator().manual_seed(seeds[i // n] * 1009 + i % n) for i in range(total)]
    processors = logits_processors(model.generation_config, sampling)
    prompts = [rows[i // n] for i in range(total)]
    samples = [Sample([], False) for _ in range(total)]
    active = list(range(total))  # the sample behind each batch row
    for step_index in range(sampling.max_new_tokens):
        history = token_history(prompts, samples, active) if reads_history(processors) else torch.empty(0)
        tokens = draw(
            logits, history, processors, sampling.top_p, None if generators is None else [generators[s] for s in active]
        )
        for s, token in zip(active, tokens):
            extend(samples[s], token, eos_ids, stop)
        running = [row for row, s in enumerate(active) if not samples[s].finished]
        if not running or step_index == sampling.max_new_tokens - 1:
            break
        if len(running) <= 0.75 * len(active):
            keep = torch.tensor(running, device=mask.device)
            cache.batch_select_indices(keep)
            mask, positions = mask[keep], positions[keep]
            tokens, active = [tokens[row] for row in running], [active[row] for row in running]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
        step = torch.tensor(tokens, device=mask.device)[:, None]
        out = model(
            input_ids=step,
            attention_mask=mask,
            position_ids=positions[:, None],
            **cache_argument(model, cache),
            use_cache=True,
        )
        positions = positions + 1
        logits = out.logits[:, -1, :].float()
    return [samples[i * n : (i + 1) * n] for i in range(len(rows))]


def extend(sample: Sample, token: int, eos_ids: list[int], stop: StopWatch) -> None:
    """Add a drawn token to an unfinished sample: end-of-sequence ends it (and is not kept), so does
    a stop string (kept)."""
    if sample.finished:
        return
    if token in eos_ids:
        sample.finished = True
        return
    sample.tokens.append(token)
    sample.stopped_at = stop.check(sample.tokens)
    sample.finished = sample.stopped_at is not None


def reads_history(processors: LogitsProcessorList) -> bool:
    """Sequence bias and repetition penalty read the tokens so far; temperature and top-p do not."""
    return any(isinstance(p, SequenceBiasLogitsProcessor | RepetitionPenaltyLogitsProcessor) for p in processors)


def token_history(prompts: list[list[int]], samples: list[Sample], active: list[int]) -> torch.Tensor:
    """Prompt + sampled tokens of the active samples, left-padded with each row's own first token
    (a repeat of a token already there changes neither a repetition penalty nor a sequence bias)."""
    rows = [prompts[s] + samples[s].tokens for s in active]
    width = max(len(r) for r in rows)
    return torch.tensor([[r[0]] * (width - len(r)) + r for r in rows])
