"""An OpenAI-compatible chat-completions server as an engine (vLLM, llama.cpp, TGI, OpenAI, ...).

Faults are retried with tenacity: timeouts, connection errors, truncated bodies, HTTP 408/429/5xx
and 200 replies that are not chat completions wait an exponential backoff with jitter (at least the
server's `Retry-After` seconds, capped at `backoff_max`) and are sent again, up to `max_retries`
times. Other HTTP errors (400, 401, 404, ...) fail at once. A batch (one `generate` call) yields a
completion for every request or raises a one-line SelfRewardError: a request that exhausts its
retries stops the batch, and so does the circuit breaker, which trips after
`max_consecutive_failures` failed attempts in a row across the batch's concurrent requests. Either
way no further request is sent; batches written before are kept, so the stage resumes.

The API key is read from the environment variable named in the config and is never logged or
written anywhere; it is masked in server replies quoted in errors.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential_jitter,
)

from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.errors import SelfRewardError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 429} | set(range(500, 600))


class ServerFault(Exception):
    """A failed attempt worth retrying; `retry_after` is the server's Retry-After in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class BatchStopped(Exception):
    """A request not sent because its batch already failed."""


@dataclass
class BatchState:
    """Shared by the concurrent requests of one `generate` call: the circuit breaker's count."""

    breaker_threshold: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    consecutive_failures: int = 0
    attempts: int = 0
    done: int = 0
    tripped: bool = False
    last_failure: str = ""
    first_error: Exception | None = None

    def record_failure(self, reason: str) -> None:
        with self.lock:
            self.attempts += 1
            self.consecutive_failures += 1
            self.last_failure = reason
            if self.consecutive_failures >= self.breaker_threshold:
                self.tripped = True
                self.stop.set()

    def record_success(self) -> None:
        with self.lock:
            self.attempts += 1
            self.consecutive_failures = 0
            self.done += 1

    def sleep(self, seconds: float) -> None:
        """Wait before a retry; a stopped batch wakes its sleepers at once."""
        self.stop.wait(seconds)

    def fail(self, error: Exception) -> None:
        """A request gave up: the batch sends nothing more."""
        with self.lock:
            self.first_error = self.first_error or error
            self.stop.set()


def one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the HTTP-date form is ignored: backoff applies)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        concurrency: int = 8,
        max_retries: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        max_consecutive_failures: int = 10,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_max = backoff_max
        self.max_consecutive_failures = max_consecutive_failures
        self.backoff = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial)
        self.key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)

    def _masked(self, text: str) -> str:
        return one_line(text.replace(self.key, "***") if self.key else text)

    def _post(self, body: dict[str, Any]) -> Completion:
        """One attempt: a completion, a ServerFault to retry, or a SelfRewardError."""
        try:
            response = self.client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise ServerFault(f"no reply within the timeout ({exc.__class__.__name__})") from None
        except httpx.ConnectError as exc:
            raise ServerFault(f"unreachable ({exc.__class__.__name__}: {self._masked(str(exc))})") from None
        except httpx.TransportError as exc:
            raise ServerFault(f"connection failed ({exc.__class__.__name__}: {self._masked(str(exc))})") from None
        except httpx.HTTPError as exc:
            raise SelfRewardError(
                f"judge server {self.url}: {exc.__class__.__name__}: {self._masked(str(exc))}"
            ) from None
        if response.status_code in RETRYABLE_STATUS:
            raise ServerFault(f"HTTP {response.status_code}", retry_after_seconds(response))
        if response.status_code != 200:
            raise SelfRewardError(
                f"judge server {self.url} answered HTTP {response.status_code}: {self._masked(response.text)}"
            )
        try:
            payload = response.json()
            choice = payload["choices"][0]
            text = choice["message"]["content"] or ""
            if not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, IndexError, TypeError):
            raise ServerFault(f"a reply that is not a chat completion: {self._masked(response.text)!r}") from None
        tokens = (payload.get("usage") or {}).get("completion_tokens") or len(text.split())
        return Completion(text=text.strip(), num_tokens=int(tokens), finished=choice.get("finish_reason") != "length")

    def _attempt(self, body: dict[str, Any], batch: BatchState) -> Completion:
        if batch.stop.is_set():
            raise BatchStopped
        try:
            completion = self._post(body)
        except ServerFault as fault:
            batch.record_failure(fault.reason)
            raise
        batch.record_success()
        return completion

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter, at least the server's Retry-After (capped at backoff_max)."""
        fault = state.outcome.exception() if state.outcome else None
        retry_after = fault.retry_after if isinstance(fault, ServerFault) else None
        return max(self.backoff(state), min(retry_after or 0.0, self.backoff_max))

    def _log_retry(self, state: RetryCallState) -> None:
        fault = state.outcome.exception() if state.outcome else None
        log.warning(
            "judge server %s: %s; retry %d/%d in %.2f s",
            self.url,
            fault,
            state.attempt_number,
            self.max_retries,
            state.upcoming_sleep,
        )

    def _one(self, request: Request, sampling: Sampling, seed: int, batch: BatchState) -> Completion:
        messages = [{"role": role, "content": content} for role, content in request.messages]
        if request.prefix:  # servers cannot prefill: ask the model to continue the text instead
            messages.append({"role": "assistant", "content": request.prefix})
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "seed": seed,
        }
        retrying = Retrying(
            retry=retry_if_exception_type(ServerFault),
            stop=stop_after_attempt(self.max_retries + 1) | stop_when_event_set(batch.stop),
            wait=self._wait,
            sleep=batch.sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(self._attempt, body, batch)
        except (ServerFault, SelfRewardError) as exc:
            batch.fail(exc)
            raise

    def _failure(self, batch: BatchState, total: int) -> SelfRewardError:
        """The one-line error for a batch that gave up."""
        counts = f"{batch.done}/{total} requests of this batch done, {batch.attempts} attempts sent"
        if batch.tripped:
            return SelfRewardError(
                f"judge server {self.url} failed {batch.consecutive_failures} attempts in a row (last: {batch.last_failure}); "
                f"{counts}; the circuit breaker (max_consecutive_failures) stopped the stage"
            )
        if isinstance(batch.first_error, SelfRewardError):
            return batch.first_error
        return SelfRewardError(
            f"judge server {self.url}: a request failed {self.max_retries + 1} attempts (last: {batch.first_error}); {counts}; raise max_retries or check the server"
        )

    def generate(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Completion]:
        batch = BatchState(self.max_consecutive_failures)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._one, request, sampling, seed + i, batch) for i, request in enumerate(requests)]
            wait(futures, return_when=FIRST_EXCEPTION)
            if batch.stop.is_set():
                pool.shutdown(wait=True, cancel_futures=True)
                raise self._failure(batch, len(requests))
        return [f.result() for f in futures]

    def close(self) -> None:
        self.client.close()
