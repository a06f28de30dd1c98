"""Generation engines behind one interface (`Engine`): transformers (`hf`), vLLM in process
(`vllm`), and OpenAI-compatible servers (judges)."""

from selfreward.config import Config, JudgeEngineConfig, ServerJudgeConfig
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.registry import ENGINES, load


def make_engine(config: Config, name_or_path: str | None = None) -> Engine:
    """The engine for `config.engine.kind` (selfreward.registry.ENGINES), loading `name_or_path` (default: config.model)."""
    engine: Engine = load(ENGINES[config.engine.kind])(config, name_or_path)
    return engine


def judge_model(judge: JudgeEngineConfig, default_model: str) -> str | None:
    """The model a local judge loads (`judge.model`, else `default_model`), resolved; None for a server judge."""
    if isinstance(judge, ServerJudgeConfig):
        return None
    from selfreward.models import resolve_model

    return resolve_model(judge.model or default_model)


def make_judge_engine(config: Config, judge: JudgeEngineConfig, default_model: str) -> Engine:
    """A judge other than the trained model: a local model (`judge_model`) or an OpenAI-compatible server."""
    if isinstance(judge, ServerJudgeConfig):
        return server_engine(judge)
    return make_engine(config, judge_model(judge, default_model))


def server_engine(judge: ServerJudgeConfig) -> Engine:
    """The OpenAI-compatible server a judge of kind `openai` names."""
    from selfreward.engines.openai import OpenAIEngine

    return OpenAIEngine(
        judge.base_url,
        judge.model,
        judge.api_key_env,
        judge.timeout,
        judge.concurrency,
        judge.max_retries,
        judge.backoff_initial,
        judge.backoff_max,
        judge.max_consecutive_failures,
    )


__all__ = [
    "Completion",
    "Engine",
    "Request",
    "Sampling",
    "judge_model",
    "make_engine",
    "make_judge_engine",
    "server_engine",
]
