"""The transformers engine: batched `generate` with left padding, seeded sampling, bf16 on CPU."""

from __future__ import annotations

import gc

import torch

from selfreward.config import Config, ModelConfig
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.engines.render import choice_token_ids, model_sampling, render_request
from selfreward.engines.shared_prefix import Sample, StopWatch, sample_group
from selfreward.models import load_model, load_tokenizer, loading_switches, pick_device, pick_dtype, resolve_model


class HFEngine(Engine):
    name = "hf"

    def __init__(self, model: ModelConfig, batch_size: int, name_or_path: str | None = None):
        path = resolve_model(name_or_path or model.name_or_path)
        self.device = pick_device(model.device)
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(path, model.max_length, model.trust_remote_code)
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        self.model = load_model(path, pick_dtype(model.dtype, self.device), self.device, **loading_switches(model))
        self.model.eval()
        self.eos_ids = model_sampling(self.tokenizer, self.model.generation_config).eos_ids

    def render(self, request: Request) -> str:
        return render_request(self.tokenizer, request)

    def _encode(self, texts: list[str], room: int) -> dict[str, torch.Tensor]:
        limit = max(8, self.tokenizer.model_max_length - room)
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=limit, add_special_tokens=False
        )
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.inference_mode()
    def generate(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Completion]:
        texts = [self.render(r) for r in requests]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Completion | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            enc = self._encode([texts[i] for i in chunk], sampling.max_new_tokens)
            torch.manual_seed(seed + start)
            do_sample = sampling.temperature > 0
            generated = self.model.generate(
                **enc,
                do_sample=do_sample,
                temperature=sampling.temperature if do_sample else None,
                top_p=sampling.top_p if do_sample else None,
                top_k=None,
                max_new_tokens=sampling.max_new_tokens,
                eos_token_id=self.eos_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )[:, enc["input_ids"].shape[1] :]
            for row, i in enumerate(chunk):
                ids = generated[row].tolist()
                stop = next((j for j, t in enumerate(ids) if t in self.eos_ids), None)
                kept = ids if stop is None else ids[:stop]
                text = self.tokenizer.decode(kept, skip_special_tokens=True)
                out[i] = Completion(
                    text=text.strip(), num_tokens=len(kept) + (stop is not None), finished=stop is not None
                )
        return out  # type: ignore[return-value]

    def generate_n(
        self, requests: list[Request], n: int, sampling: Sampling, seeds: list[int]
    ) -> list[list[Completion]]:
        """`n` samples per request through the shared-prefix sampler (`shared_prefix.py`): shared
        text prefilled once, samples seeded per request, finished samples leave the batch."""
        room = self.tokenizer.model_max_length - sampling.max_new_tokens
        rows = [
            self.tokenizer(self.render(r), add_special_tokens=False)["input_ids"][-max(8, room) :] for r in requests
        ]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        per_batch = max(1, self.batch_size // n)
        stop = StopWatch(self.tokenizer, sampling.stop)
        out: list[list[Completion]] = [[] for _ in rows]
        for start in range(0, len(order), per_batch):
            chunk = order[start : start + per_batch]
            groups = sample_group(
                self.model,
                [rows[i] for i in chunk],
                n,
                sampling,
                [seeds[i] for i in chunk],
                self.eos_ids,
                self.tokenizer.pad_token_id,
                stop,
            )
            for i, samples in zip(chunk, groups):
                out[i] = [self._completion(s) for s in samples]
        return out

    def _completion(self, sample: Sample) -> Completion:
        text = self.tokenizer.decode(sample.tokens, skip_special_tokens=True)
        if sample.stopped_at is not None:
            text = text[: text.index(sample.stopped_at) + len(sample.stopped_at)]
        ended_by_eos = sample.finished and sample.stopped_at is None
        return Completion(text=text.strip(), num_tokens=len(sample.tokens) + ended_by_eos, finished=sample.finished)

    @torch.inference_mode()
    def choice_probs(self, requests: list[Request], choices: list[str]) -> list[list[float] | None]:
        token_ids = choice_token_ids(self.tokenizer, choices)
        texts = [self.render(r) for r in requests]
        out = []
        for start in range(0, len(texts), self.batch_size):
            enc = self._encode(texts[start : start + self.batch_size], room=1)
            logits = self.model(**enc).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)
            mass = torch.stack([probs[:, ids].sum(dim=-1) for ids in token_ids], dim=-1)
            out.extend((mass / mass.sum(dim=-1, keepdim=True).clamp_min(1e-12)).tolist())
        return out

    def context_room(self, request: Request, max_new_tokens: int) -> int:
        used = len(self.tokenizer(self.render(request), add_special_tokens=False)["input_ids"])
        return self.tokenizer.model_max_length - max_new_tokens - used

    def prompt_length(self, request: Request) -> int:
        return len(self.render(request))

    def close(self) -> None:
        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load(config: Config, name_or_path: str | None = None) -> HFEngine:
    """`engine.kind: hf` (selfreward.engines.ENGINES)."""
    return HFEngine(config.model, config.engine.batch_size, name_or_path)
