"""The vLLM engine: an in-process `vllm.LLM` (GPUs), created per stage with that stage's checkpoint.

- Prompts are rendered with the Hugging Face tokenizer's chat template exactly as the hf engine
  renders them (`render_request`) and handed to vLLM as token ids, so vLLM adds no second BOS.
- `generate_n` sends each request once with `SamplingParams(n=n)`: its n samples (a candidate's K
  judgments, a prompt's N answers) share one prefill, and prefix caching reuses prefixes shared
  across requests (the judge rubric). vLLM refuses n > 1 with greedy decoding, so a greedy request
  is sent with n=1 and its one completion repeated n times (greedy samples are identical).
- Seeds: every request carries its own `SamplingParams.seed` (`generate`: the call's seed plus the
  request's index in the call), so its draws do not depend on the other requests' random numbers.
  vLLM documents that it does not guarantee reproducible results by default, for performance:
  VLLM_BATCH_INVARIANT=1 (batch invariance, beta, recent NVIDIA GPUs) makes them repeat on the same
  hardware and vLLM version. Without it, a resumed stage sends the same seeds but a record's text
  may differ where batch shapes change the floating-point sums. (VLLM_ENABLE_V1_MULTIPROCESSING=0
  would also make scheduling deterministic, but an in-process engine does not give its GPU memory
  back when closed, which the create/close-per-stage design needs: leave it at its default.)
- Sampling is the hf engine's: the checkpoint's EOS ids, single-token biases and repetition penalty
  (`ModelSampling`) go into every SamplingParams, so greedy answers are the same tokens.
- Stop strings end a sequence and stay in its text (`include_stop_str_in_output`).
- `choice_probs` reads the top `logprobs_top_k` log-probabilities of one greedy step.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Mapping
from typing import Any

import torch

from selfreward.config import Config, ModelConfig, VLLMConfig
from selfreward.engines.base import Completion, Engine, Request, Sampling
from selfreward.engines.render import ModelSampling, choice_token_ids, model_sampling, render_request
from selfreward.errors import SelfRewardError
from selfreward.models import load_tokenizer, resolve_model

INSTALL_HINT = 'engine.kind is "vllm" but vllm is not installed: pip install -e ".[vllm]" (GPU machines)'


def vllm_dtype(dtype: str) -> str:
    """model.dtype for vLLM: `auto` means bfloat16 on GPUs that support it (as the hf engine
    picks), else vLLM's own choice (the checkpoint's dtype, float16 for float32 checkpoints)."""
    if dtype == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return dtype


def sampling_params(sampling: Sampling, n: int, seed: int, model: ModelSampling) -> Any:
    """vLLM's SamplingParams for `n` samples of one request (temperature 0: greedy, n=1), with the
    checkpoint's own EOS ids, biases and repetition penalty as the hf engine applies them."""
    from vllm import SamplingParams

    greedy = sampling.temperature <= 0
    return SamplingParams(
        n=1 if greedy else n,
        seed=seed,
        temperature=0.0 if greedy else sampling.temperature,
        top_p=1.0 if greedy else sampling.top_p,
        max_tokens=sampling.max_new_tokens,
        stop=list(sampling.stop),
        stop_token_ids=model.eos_ids,
        include_stop_str_in_output=True,
        logit_bias=model.logit_bias or None,
        repetition_penalty=model.repetition_penalty,
    )


def to_completion(output: Any) -> Completion:
    """A vLLM CompletionOutput as a Completion: finish reason `stop` (end of sequence or a stop
    string) is finished; `length` (max_tokens or the context) is not."""
    return Completion(
        text=output.text.strip(), num_tokens=len(output.token_ids), finished=output.finish_reason == "stop"
    )


def choice_distribution(top_logprobs: Mapping[int, Any], token_ids: list[list[int]]) -> list[float] | None:
    """Each choice's probability mass (its spellings among the top-k log-probabilities; absent: 0),
    renormalised over the choices; None when no choice is among the top-k (no score to read: a
    uniform guess would read as a middling 2.5)."""
    mass = [sum(math.exp(top_logprobs[t].logprob) for t in ids if t in top_logprobs) for ids in token_ids]
    total = sum(mass)
    return [m / total for m in mass] if total > 0 else None


def checkpoint_sampling(path: str, tokenizer: Any, trust_remote_code: bool) -> ModelSampling:
    """The checkpoint's own sampling settings (its generation_config.json, if any), as the hf engine applies them."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError:  # no generation_config.json: transformers' defaults, as the hf engine then uses
        config = GenerationConfig()
    found = model_sampling(tokenizer, config)
    if found.multi_token_biases:
        raise SelfRewardError(
            f"{path}: generation_config.sequence_bias biases {found.multi_token_biases} multi-token sequences, which vLLM cannot apply (engine.kind hf can)"
        )
    return found


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, model: ModelConfig, settings: VLLMConfig, name_or_path: str | None = None):
        try:
            from vllm import LLM
        except ImportError:
            raise SelfRewardError(INSTALL_HINT) from None
        path = resolve_model(name_or_path or model.name_or_path)
        self.max_model_len = settings.max_model_len or model.max_length
        self.logprobs_top_k = settings.logprobs_top_k
        self.tokenizer = load_tokenizer(path, self.max_model_len, model.trust_remote_code)
        self.sampling = checkpoint_sampling(path, self.tokenizer, model.trust_remote_code)
        self.llm = LLM(
            model=path,
            dtype=vllm_dtype(model.dtype),
            trust_remote_code=model.trust_remote_code,
            load_format="auto" if model.allow_pickle else "safetensors",
            tensor_parallel_size=settings.tensor_parallel_size,
            pipeline_parallel_size=settings.pipeline_parallel_size,
            distributed_executor_backend=settings.distributed_executor_backend,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            max_model_len=self.max_model_len,
            enable_prefix_caching=settings.enable_prefix_caching,
            max_logprobs=settings.logprobs_top_k,
        )

    def _token_ids(self, request: Request) -> list[int]:
        return self.tokenizer(render_request(self.tokenizer, request), add_special_tokens=False)["input_ids"]

    def _prompt(self, request: Request, room: int) -> dict[str, list[int]]:
        """vLLM's TokensPrompt, cut from the left to leave `room` tokens of context (as the hf engine)."""
        keep = max(8, self.max_model_len - room)
        return {"prompt_token_ids": self._token_ids(request)[-keep:]}

    def generate(self, requests: list[Request], sampling: Sampling, seed: int) -> list[Completion]:
        samples = self.generate_n(requests, 1, sampling, [seed + i for i in range(len(requests))])
        return [sample[0] for sample in samples]

    def generate_n(
        self, requests: list[Request], n: int, sampling: Sampling, seeds: list[int]
    ) -> list[list[Completion]]:
        if not requests:
            return []
        prompts = [self._prompt(r, sampling.max_new_tokens) for r in requests]
        results = self.llm.generate(
            prompts, [sampling_params(sampling, n, seed, self.sampling) for seed in seeds], use_tqdm=False
        )
        out = []
        for result in results:
            outputs = sorted(result.outputs, key=lambda o: o.index)
            out.append([to_completion(outputs[j % len(outputs)]) for j in range(n)])
        return out

    def choice_probs(self, requests: list[Request], choices: list[str]) -> list[list[float] | None]:
        from vllm import SamplingParams

        if not requests:
            return []
        token_ids = choice_token_ids(self.tokenizer, choices)
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.logprobs_top_k)
        results = self.llm.generate([self._prompt(r, 1) for r in requests], params, use_tqdm=False)
        return [choice_distribution(result.outputs[0].logprobs[0], token_ids) for result in results]

    def context_room(self, request: Request, max_new_tokens: int) -> int:
        return self.max_model_len - max_new_tokens - len(self._token_ids(request))

    def prompt_length(self, request: Request) -> int:
        return len(render_request(self.tokenizer, request))

    def close(self) -> None:
        """Stop vLLM's engine process and free its GPU memory (model parallel groups, the
        distributed environment, the CUDA cache), so a training stage can take the GPUs."""
        from vllm.distributed import cleanup_dist_env_and_memory

        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        cleanup_dist_env_and_memory()
        gc.collect()  # recent vLLM's cleanup collects and empties the cache too; older ones did not
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load(config: Config, name_or_path: str | None = None) -> VLLMEngine:
    """`engine.kind: vllm` (selfreward.engines.ENGINES)."""
    return VLLMEngine(config.model, config.engine.vllm, name_or_path)
