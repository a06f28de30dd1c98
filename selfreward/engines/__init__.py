"""Generation engines behind one interface (`Engine`): transformers today; vLLM and
OpenAI-compatible servers plug in the same way."""

from selfreward.config import Config
from selfreward.engines.base import Completion, Engine, Request, Sampling


def make_engine(config: Config, name_or_path: str | None = None) -> Engine:
    """The engine for `config.engine.kind`, loading `name_or_path` (default: config.model)."""
    if config.engine.kind == "hf":
        from selfreward.engines.hf import HFEngine

        return HFEngine(config.model, config.engine.batch_size, name_or_path)
    raise ValueError(f"unknown engine kind {config.engine.kind!r}")


__all__ = ["Completion", "Engine", "Request", "Sampling", "make_engine"]
