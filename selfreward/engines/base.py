"""The generation interface every engine implements: chat requests + sampling -> texts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    """Strings that end a sequence as soon as its text contains one; the text keeps the stop string
    (the judge stops right after its `Score: N` line)."""


@dataclass(frozen=True)
class Request:
    """One sequence to generate: a chat rendered with the tokenizer's template, then `prefix`
    (text the assistant turn starts with, e.g. `Task 9:`)."""

    messages: tuple[tuple[str, str], ...]
    prefix: str = ""

    @classmethod
    def user(cls, content: str, prefix: str = "") -> Request:
        return cls(messages=(("user", content),), prefix=prefix)


@dataclass
class Completion:
    text: str
    num_tokens: int
    finished: bool = field(default=True)
    """False when generation stopped at max_new_tokens instead of end-of-sequence."""


class Engine(ABC):
    """Generates completions for chat requests. One call is one batch; `seed` makes it repeatable."""

    name: str = "engine"

    @abstractmethod
    def generate(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Completion]: ...

    def generate_n(
        self, requests: list[Request], n: int, sampling: Sampling, seeds: list[int]
    ) -> list[list[Completion]]:
        """`n` samples for each request (a candidate's K judgments, a prompt's N answers), request i
        seeded by `seeds[i]`. Engines that can share one prefill among the n samples and seed each
        request alone override this; this default samples the repeated requests in one batch
        seeded by `seeds[0]`."""
        if not requests:
            return []
        flat = self.generate([r for r in requests for _ in range(n)], sampling, seeds[0])
        return [flat[i * n : (i + 1) * n] for i in range(len(requests))]

    def choice_probs(self, requests: list[Request], choices: list[str]) -> list[list[float] | None]:
        """Probabilities of each single-token choice right after each request's rendered text
        (prefix included), renormalised over the choices; None where the engine sees none of them."""
        raise NotImplementedError(f"the {self.name} engine cannot read token probabilities")

    def context_room(self, request: Request, max_new_tokens: int) -> int | None:
        """Tokens to spare once the rendered request and `max_new_tokens` are in the model's
        context (negative: it does not fit), or None when this engine cannot count tokens."""
        return None

    def prompt_length(self, request: Request) -> int:
        """A cheap, deterministic size of the rendered request, used to sort work into batches."""
        return sum(len(content) for _, content in request.messages) + len(request.prefix)

    def close(self) -> None:  # noqa: B027 - an optional hook: engines that hold nothing keep this no-op
        """Release memory (models, server handles)."""
