"""An OpenAI-compatible chat-completions server as an engine (vLLM, llama.cpp, TGI, OpenAI, ...).

The API key is read from the environment variable named in the config and is never logged or
written anywhere.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import httpx

from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.errors import SelfRewardError


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0, concurrency: int = 8):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.concurrency = concurrency
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)

    def _one(self, request: Request, sampling: Sampling, seed: int) -> Completion:
        messages = [{"role": role, "content": content} for role, content in request.messages]
        if request.prefix:  # servers cannot prefill: ask the model to continue the text instead
            messages.append({"role": "assistant", "content": request.prefix})
        body = {"model": self.model, "messages": messages, "temperature": sampling.temperature, "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens, "seed": seed}
        try:
            response = self.client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise SelfRewardError(f"judge server {self.url} unreachable: {exc.__class__.__name__}: {exc}") from None
        if response.status_code != 200:
            raise SelfRewardError(f"judge server {self.url} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise SelfRewardError(f"judge server {self.url} sent a reply that is not a chat completion: {response.text[:200]}") from None
        tokens = (payload.get("usage") or {}).get("completion_tokens") or len(text.split())
        return Completion(text=text.strip(), num_tokens=int(tokens), finished=choice.get("finish_reason") != "length")

    def generate(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda ir: self._one(ir[1], sampling, seed + ir[0]), enumerate(requests)))

    def close(self) -> None:
        self.client.close()
