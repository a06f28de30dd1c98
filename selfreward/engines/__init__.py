"""Generation engines behind one interface (`Engine`): transformers (`hf`), vLLM in process
(`vllm`), and OpenAI-compatible servers (judges)."""

from selfreward.config import Config, JudgeEngineConfig
from selfreward.engines.base import Completion, Engine, Request, Sampling


def make_engine(config: Config, name_or_path: str | None = None) -> Engine:
    """The engine for `config.engine.kind`, loading `name_or_path` (default: config.model)."""
    if config.engine.kind == "hf":
        from selfreward.engines.hf import HFEngine

        return HFEngine(config.model, config.engine.batch_size, name_or_path)
    if config.engine.kind == "vllm":
        from selfreward.engines.vllm import VLLMEngine

        return VLLMEngine(config.model, config.engine.vllm, name_or_path)
    raise ValueError(f"unknown engine kind {config.engine.kind!r}")


def judge_model(judge: JudgeEngineConfig, default_model: str) -> str | None:
    """The model a local judge loads (`judge.model`, else `default_model`), resolved; None for a server judge."""
    if judge.kind == "openai":
        return None
    from selfreward.models import resolve_model

    return resolve_model(judge.model or default_model)


def make_judge_engine(config: Config, judge: JudgeEngineConfig, default_model: str) -> Engine:
    """A judge other than the trained model: a local model (`judge_model`) or an OpenAI-compatible server."""
    model = judge_model(judge, default_model)
    return make_engine(config, model) if model is not None else server_engine(judge)


def server_engine(judge: JudgeEngineConfig) -> Engine:
    """The OpenAI-compatible server a judge of kind `openai` names."""
    from selfreward.engines.openai import OpenAIEngine

    return OpenAIEngine(
        judge.base_url or "",
        judge.model or "",
        judge.api_key_env,
        judge.timeout,
        judge.concurrency,
        judge.max_retries,
        judge.backoff_initial,
        judge.backoff_max,
        judge.max_consecutive_failures,
    )


__all__ = ["Completion", "Engine", "Request", "Sampling", "judge_model", "make_engine", "make_judge_engine", "server_engine"]
