"""The validated run configuration: YAML presets + `key=value` overrides -> `Config`.

Defaults are the paper's values (PAPER.md); the `demo` preset shrinks sizes for a CPU.
"""

from __future__ import annotations

import re
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from selfreward.display import quoted
from selfreward.errors import SelfRewardError
from selfreward.pair_policies import POLICIES
from selfreward.registry import ENGINES, SCALES

PRESETS_DIR = Path(__file__).parent / "configs"

DEFAULT_BLACKLIST = [
    "image",
    "images",
    "picture",
    "pictures",
    "graph",
    "graphs",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "video",
    "audio",
    "music",
    "diagram",
    "flowchart",
]


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: only true/false, so `fallback: off` stays the string "off"."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class ModelConfig(Section):
    name_or_path: str = "smollm2-135m-instruct"
    """Hugging Face id, local directory, or the embedded `smollm2-135m-instruct`."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """`auto`: bfloat16 for generation (CPU with AMX/AVX-512 or GPU), float32 for training."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where models run: `auto` is CUDA when a GPU is visible, else the CPU."""
    trust_remote_code: bool = False
    """Run Python code shipped with a hub model (off: only transformers' own architectures load)."""
    allow_pickle: bool = False
    """Also load pickle weights (`pytorch_model.bin`, which can run code when loaded); off: safetensors only."""
    hub_kernels: bool = False
    """Let transformers swap layers for compiled kernels from the Hugging Face Hub (`kernels`), which
    it fetches, and whose code it runs, when a model first trains or generates on a GPU. Off: offline
    runs work (on, an offline GPU run stops at its first training step)."""
    max_length: int = Field(2048, gt=16)
    """Tokenizer model_max_length: prompts are truncated from the left to fit."""


class VLLMConfig(Section):
    """The vLLM engine (`engine.kind: vllm`; GPUs; `pip install -e ".[vllm]"`)."""

    tensor_parallel_size: int = Field(1, gt=0)
    """GPUs one model is split over (tensor parallelism), e.g. 8 for a 70B model on an 8-GPU node."""
    pipeline_parallel_size: int = Field(1, gt=0)
    """Stages one model is split into across GPUs (pipeline parallelism; with tensor parallelism within
    a node, this spans nodes: tensor x pipeline GPUs in all)."""
    distributed_executor_backend: Literal["mp", "ray", "uni", "external_launcher"] | None = None
    """How vLLM runs its workers: `mp` processes on this machine, `ray` a Ray cluster (several
    machines: start Ray first, see docs/gpus.md), null: vLLM's choice (mp on one node)."""
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """Share of each GPU's memory vLLM takes for weights, activations and its KV cache."""
    max_model_len: int | None = Field(None, gt=16)
    """Context length (prompt + generation) vLLM plans for; None: model.max_length. Longer prompts
    are cut from the left, as the hf engine cuts them."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of a prompt prefix already computed (the judge rubric shared by all
    candidates); a request's n samples share one prefill either way."""
    logprobs_top_k: int = Field(20, gt=0)
    """Top log-probabilities read at the choice position (judge digit fallback); a choice outside
    them counts as probability 0. Also vLLM's max_logprobs."""


class EngineConfig(Section):
    kind: str = "hf"
    """`hf`: transformers (CPU or one GPU); `vllm`: vLLM in this process (GPUs); the engines are in selfreward.registry."""
    batch_size: int = Field(32, gt=0)
    """Sequences per generate() call (prompts sorted by length). vLLM schedules its own batches inside a call."""
    vllm: VLLMConfig = VLLMConfig()
    """Settings of the vLLM engine, used when kind is `vllm`."""

    @field_validator("kind")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(f"unknown engine (engines: {', '.join(ENGINES)})")
        return value


class DataConfig(Section):
    ift: list[str] = ["demo"]
    """IFT seed sources: `demo`, a hub dataset name, or a JSONL/Parquet path (oasst1 messages,
    Open Assistant trees, `{prompt, response}` or `{prompt, responses}` rows)."""
    ranked: list[str] = ["demo"]
    """Human-ranked groups for EFT and reward-model evaluation (same source kinds)."""
    max_ift: int | None = Field(None, gt=0)
    """Use at most this many IFT examples, taken in order after evaluation prompts are dropped (None: all)."""
    lang: str = "en"
    """Language of the seed data kept from oasst sources."""
    on_overlap: Literal["remove", "refuse"] = "remove"
    """A training prompt (IFT or EFT) that is also an evaluation prompt (EFT eval split, eval.ranked,
    eval.prompts, eft.exclude_prompts_from; lower-cased, whitespace collapsed): `remove` drops it
    from training and logs the count per pair of sets (RUN/data.stats.json); `refuse` stops with
    one line. EFT training always drops the prompts used for IFT."""


class DecontaminateConfig(Section):
    """When a self-instruct prompt copies an evaluation prompt (verdict `contaminated`). An exact
    copy (lower-cased, whitespace collapsed) always does."""

    method: Literal["rouge_l", "ngram"] = "rouge_l"
    """rouge_l: ROUGE-L F1 with some evaluation prompt >= threshold; ngram: the share of the
    prompt's word n-grams that occur in evaluation prompts >= threshold."""
    threshold: float = Field(0.7, gt=0, le=1)
    """rouge_l: the F1; ngram: the share of the prompt's n-grams; at or above it the prompt is contaminated."""
    n: int = Field(8, gt=0)
    """ngram: words per n-gram; a prompt of fewer words is one n-gram (contaminated when it occurs
    inside an evaluation prompt)."""


class PromptsConfig(Section):
    """Few-shot self-instruct prompt generation (Self-Instruct's template and filters)."""

    num_prompts: int = Field(1000, gt=0)
    """New prompts per iteration (the paper: ~4,000-7,000; the demo: a few dozen)."""
    generator: str | None = None
    """Model that writes prompts; None = the model being trained (paper: a fixed Llama 2-Chat)."""
    seed_shots: int = Field(6, ge=0)
    """Examples per request drawn from the seed IFT prompts (Self-Instruct: 6 of 8)."""
    generated_shots: int = Field(2, ge=0)
    """Examples per request drawn from the prompts generated so far (Self-Instruct: 2 of 8)."""
    tasks_per_request: int = Field(4, gt=0)
    """How many new tasks each request asks for."""
    requests_per_round: int = Field(16, gt=0)
    """Few-shot requests per round; the filters run after each round."""
    max_rounds: int = Field(200, gt=0)
    """Give up after this many rounds even with fewer than num_prompts kept (the stats say so)."""
    temperature: float = Field(0.6, ge=0)
    """Sampling temperature of the prompt generator (the paper: 0.6)."""
    top_p: float = Field(0.9, gt=0, le=1)
    """Nucleus sampling of the prompt generator (the paper: 0.9)."""
    max_new_tokens: int = Field(256, gt=0)
    """Longest completion per request (it holds `tasks_per_request` tasks)."""
    rouge_threshold: float = Field(0.7, gt=0, le=1)
    """A new prompt with ROUGE-L F1 at or above this with any existing prompt is a near duplicate (Self-Instruct: 0.7)."""
    min_words: int = Field(3, ge=1)
    """Shortest prompt kept, in words."""
    max_words: int = Field(150, gt=1)
    """Longest prompt kept, in words."""
    blacklist: list[str] = DEFAULT_BLACKLIST
    """Prompts with any of these words are rejected (Self-Instruct: tasks a language model cannot do, such as images)."""
    decontaminate: DecontaminateConfig = DecontaminateConfig()
    """Prompts copying an evaluation prompt (EFT eval split, eval.ranked, eval.prompts,
    eft.exclude_prompts_from) are rejected as `contaminated`."""


class CandidatesConfig(Section):
    n: int = Field(4, gt=1)
    """Answers sampled per prompt (the paper: N = 4)."""
    temperature: float = Field(0.7, ge=0)
    """Sampling temperature of the answers (the paper: 0.7)."""
    top_p: float = Field(0.9, gt=0, le=1)
    """Nucleus sampling of the answers (the paper: 0.9)."""
    max_new_tokens: int = Field(512, gt=0)
    """Longest answer; an answer cut here is unfinished and never paired (pairs.require_finished)."""


class JudgeConfig(Section):
    kind: Literal["text", "implicit"] = "text"
    """text: the model writes K judgments with the additive 5-point prompt and the score is read from
    them (the paper); implicit: DPO's implicit reward beta * (log pi_t(y|x) - log pi_ref(y|x)) of
    each answer, from two forward passes and no judgment (DICE, Chen et al., ICLR 2025)."""
    k: int = Field(3, gt=0)
    """Judgments per candidate; valid scores are averaged."""
    temperature: float = Field(0.7, ge=0)
    """Sampling temperature of written judgments (the paper: 0.7, with K = 3 averaged)."""
    top_p: float = Field(0.9, gt=0, le=1)
    """Nucleus sampling of written judgments (the paper: 0.9)."""
    max_new_tokens: int = Field(256, gt=0)
    """Longest written judgment; it stops early right after its `Score: N` line."""
    scale: str = "additive_5pt"
    """text: the scale judgments are written on (selfreward.judging: its prompt, its `Score: N` line, its range);
    additive_5pt is the paper's 0-5 additive prompt."""
    template: str | None = None
    """text: a template name in selfreward/prompts or a path to a text file with {instruction} and
    {response}, asking for the scale's score line; null: the scale's own prompt."""
    fallback: Literal["off", "fallback", "always"] = "off"
    """Digit probabilities after `Score: `: off; only when the text has no score; for every judgment."""
    beta: float = Field(0.1, gt=0)
    """implicit: the reward's scale; pairs depend only on the order of rewards, so only its sign matters."""
    per_token: bool = False
    """implicit: divide each log-ratio by the answer's token count (length-normalised reward)."""
    reference: str | None = None
    """implicit: pi_ref, a model path/id; null: the model M_t was trained from -- M0 for M1 (M1 = SFT
    of M0), the reference of the DPO that made M_t for later models (`dpo.reference`)."""

    @field_validator("scale")
    @classmethod
    def _known_scale(cls, value: str) -> str:
        if value not in SCALES:
            raise ValueError(f"unknown scale (scales: {', '.join(SCALES)})")
        return value


class PairsConfig(Section):
    min_margin: float | None = Field(None, ge=0)
    """Keep a pair only when its exact margin (chosen - rejected average score) exceeds this.
    None: by score source -- 0 when both sides are text scores (any non-zero margin, as in the
    paper) or both implicit rewards, `digit_probs_margin` when either side is a digit-probability expectation."""
    digit_probs_margin: float = Field(0.33, ge=0)
    """The default minimum margin for pairs with a digit-probability score. Expectations are
    continuous, so answers of the same quality differ by noise: measured on the demo, two K=3
    averages of the same answer differ by 0.33 (SD; raw SmolLM2, 140 fallback judgments) and 0.64
    (M1, expectation read after its own judgment). 0.33 is the first figure and also the
    resolution of integer text scores averaged over K=3 (docs/pairs.md)."""
    require_finished: bool = True
    """Answers cut at candidates.max_new_tokens never become chosen or rejected (TRL appends EOS,
    which would teach the model to stop mid-sentence)."""
    policy: str = "max_min"
    """Which answers become chosen and rejected (selfreward/pair_policies.py, docs/pairs.md "Pair
    policies"): max_min (the paper), length_control (Meta-Rewarding), spin (human IFT answer vs
    own sample, SPIN), anchored (best answer vs the initial model's worst, Temporal Self-Rewarding)."""
    rho: list[Annotated[float, Field(ge=0, lt=0.5)]] = Field([0.0, 0.32, 0.32, 0.4], min_length=1)
    """length_control: the score band, a share of (max - min), within which the shortest top answer
    is chosen and the longest bottom answer rejected. One number, or one per iteration (iteration t
    uses element t, the last one repeated); default: Meta-Rewarding's schedule."""

    @field_validator("rho", mode="before")
    @classmethod
    def _one_rho(cls, value: Any) -> Any:
        """A single number stands for every iteration."""
        return [value] if isinstance(value, int | float) else value

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in POLICIES:
            raise ValueError(f"unknown pair policy (policies: {', '.join(POLICIES)})")
        return value

    def rho_at(self, iteration: int) -> float:
        """The rho of iteration `iteration` (1-based)."""
        return self.rho[min(iteration, len(self.rho)) - 1]


TRLLossType = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]
"""TRL's DPO loss types (trl 1.16 DPOTrainingConfig.loss_type; TRL offers no list to import, and importing
TRL would slow every config load: tests/test_dpo_options.py checks this list against TRL's)."""


class MetaConfig(Section):
    """The meta-judge (Meta-Rewarding, arXiv 2407.19594): the model compares its own judgments and
    learns, by DPO, to judge more like its better judgments."""

    enabled: bool = False
    """Run the meta-judge stage after the pairs stage and add judge-preference pairs to the DPO data."""
    fraction: float = Field(0.1, gt=0, le=0.5)
    """Most judge pairs as a share of the pairs file (actor + judge pairs). NeMo-Aligner's advice
    is <= 0.15: more, and the judge drifts to always giving 5; at most 0.5 (never more judge
    pairs than actor pairs)."""
    template: str = "meta_judge"
    """A template name in selfreward/prompts or a path to a text file with {instruction},
    {response}, {judgment_a} and {judgment_b}, asking for a last line `Winner: A` or `Winner: B`."""
    temperature: float = Field(0.0, ge=0)
    """Sampling temperature of the meta-judge (0: greedy, one verdict per order)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling of the meta-judge (with temperature > 0)."""
    max_new_tokens: int = Field(256, gt=0)
    """Room for the meta-judge's comparison and its `Winner:` line."""


ACCELERATE_CONFIGS_DIR = PRESETS_DIR / "accelerate"


class LoRAConfig(Section):
    """Low-rank adapters (PEFT LoRA) in place of full fine-tuning. The base weights stay frozen;
    each stage merges its adapter into a full checkpoint, which the next stage loads as any model."""

    r: int = Field(16, gt=0)
    """Rank of each adapter's two update matrices."""
    alpha: int = Field(32, gt=0)
    """Scale: the adapter's update is multiplied by alpha / r."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the adapters' inputs (the model's own dropout is the section's `dropout`)."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Modules that get an adapter: module names (e.g. [q_proj, v_proj]) or `all-linear`
    (every linear layer but the output head, as in QLoRA)."""


class TrainingConfig(Section):
    learning_rate: float = Field(gt=0)
    """Peak learning rate, reached at the first step (no warm-up)."""
    final_learning_rate: float = Field(ge=0)
    """The learning rate decays linearly from learning_rate to this value."""
    batch_size: int = Field(16, gt=0)
    """Effective batch: micro_batch_size x gradient accumulation (x GPUs)."""
    micro_batch_size: int = Field(1, gt=0)
    """Sequences (SFT) or pairs (DPO) per forward pass; batch_size / micro_batch_size steps are accumulated."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training data (a fraction stops part-way)."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Set on every dropout field the model's config has (Llama: attention_dropout)."""
    max_length: int = Field(1024, gt=16)
    """Tokens of prompt + answer; longer examples and pairs are dropped and counted, never truncated."""
    bf16: bool | Literal["auto"] = "auto"
    """Mixed precision: auto = on for GPUs with bf16 and CPUs with AMX/AVX-512-BF16."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    save_steps: int = Field(200, gt=0)
    """A Trainer checkpoint every this many optimizer steps (also what a resumed stage restarts from)."""
    report_to: list[Literal["tensorboard", "wandb"]] = []
    """Also log training metrics to: tensorboard (event files in STAGE_DIR/trainer/runs) and/or
    wandb; [] or `none`: only the stage's stats file. The package must be installed."""
    lora: LoRAConfig | None = None
    """Train LoRA adapters (r, alpha, dropout, target_modules) instead of every weight; null: full
    fine-tuning. DPO's reference is then the policy with its adapter switched off (no second copy)."""
    quantize: Literal["4bit"] | None = None
    """`4bit`: QLoRA, the frozen base weights in 4-bit NF4 (bitsandbytes, CUDA GPUs only); needs `lora`.
    The merged checkpoint is written in bf16 from the unquantized base."""
    weights_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Dtype the weights are loaded in for training. auto: bfloat16 on a GPU when `bf16` is on and the
    trained weights keep fp32 elsewhere (LoRA adapters, DeepSpeed's fp32 master copy), else float32:
    plain Adam on bf16 weights drops every update below bf16's resolution (~0.4% of a weight)."""
    accelerate_config: str | None = None
    """Train in `accelerate launch` worker processes with this config: a shipped one (ddp, fsdp,
    deepspeed_zero3, deepspeed_zero3_offload; selfreward/configs/accelerate) or a YAML path.
    null: train in the run's own process. Output goes to STAGE_DIR/launch.log."""
    child_process: bool | Literal["auto"] = "auto"
    """Train in a child process (`python -m selfreward.launch`), whose exit returns every byte of GPU
    memory it held; auto: when engine.kind is vllm, which must find that memory free when it starts.
    With accelerate_config the training runs in worker processes anyway."""
    num_processes: int | None = Field(None, gt=0)
    """With accelerate_config: processes over all machines (one per GPU); null: the config's own
    num_processes, or one per visible GPU."""

    @model_validator(mode="after")
    def _decays(self) -> TrainingConfig:
        if self.final_learning_rate >= self.learning_rate:
            raise ValueError(
                f"final_learning_rate ({self.final_learning_rate:g}) must be below learning_rate ({self.learning_rate:g}): the rate decays to it"
            )
        return self

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_logger(cls, value: Any) -> Any:
        """A single name stands for a one-item list; `none` for the empty list."""
        if isinstance(value, str):
            return [] if value == "none" else [value]
        return value

    @field_validator("report_to")
    @classmethod
    def _logger_installed(cls, value: list[str]) -> list[str]:
        packages = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
        for logger in value:
            if not any(find_spec(package) for package in packages[logger]):
                raise ValueError(f"{logger} is not installed (pip install {logger})")
        return value

    @field_validator("quantize")
    @classmethod
    def _bitsandbytes_installed(cls, value: str | None) -> str | None:
        if value is not None and find_spec("bitsandbytes") is None:
            raise ValueError(f"{value} needs bitsandbytes and a CUDA GPU (pip install bitsandbytes)")
        return value

    @field_validator("accelerate_config")
    @classmethod
    def _accelerate_config_exists(cls, value: str | None) -> str | None:
        if value is not None:
            accelerate_distributed_type(value)
        return value

    @model_validator(mode="after")
    def _check_batch(self) -> TrainingConfig:
        processes = self.num_processes or 1
        if self.batch_size % (self.micro_batch_size * processes):
            raise ValueError(
                f"batch_size must be a multiple of micro_batch_size x num_processes ({self.micro_batch_size} x {processes})"
            )
        if self.quantize and self.lora is None:
            raise ValueError(
                "quantize needs lora: 4-bit weights cannot be fine-tuned themselves (QLoRA trains adapters)"
            )
        if self.num_processes and self.accelerate_config is None:
            raise ValueError("num_processes needs accelerate_config (e.g. ddp)")
        if self.final_learning_rate > self.learning_rate:
            raise ValueError("final_learning_rate must not exceed learning_rate")
        return self


def accelerate_config_path(name_or_path: str) -> Path:
    """A shipped accelerate config name (`ddp`) or a YAML path -> the file."""
    shipped = ACCELERATE_CONFIGS_DIR / f"{name_or_path}.yaml"
    return shipped if shipped.is_file() else Path(name_or_path).expanduser()


def accelerate_distributed_type(name_or_path: str) -> str:
    """The `distributed_type` of an accelerate config (DEEPSPEED, FSDP, MULTI_GPU, ...);
    ValueError when there is no such file or it is not an accelerate config."""
    path = accelerate_config_path(name_or_path)
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in ACCELERATE_CONFIGS_DIR.glob("*.yaml")))
        raise ValueError(f"no accelerate config {name_or_path!r} (shipped: {names}; or a YAML path)")
    try:
        settings = yaml_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path} ({exc.__class__.__name__})") from None
    if not isinstance(settings, dict) or "distributed_type" not in settings:
        raise ValueError(f"{path} is not an accelerate config (no distributed_type)")
    return str(settings["distributed_type"])


class SFTTrainingConfig(TrainingConfig):
    learning_rate: float = Field(5.5e-6, gt=0)
    """Peak learning rate (the paper: 5.5e-6)."""
    final_learning_rate: float = Field(1.1e-6, ge=0)
    """The rate decays linearly to this (the paper: 1.1e-6)."""
    baseline: bool = True
    """Also train the SFT baseline (IFT only), for comparison and as the default EFT judge."""
    m1_with_ift: bool = True
    """M1 trains on the IFT examples and the EFT examples (the paper). `false`: on the EFT examples
    only, so that M1 learns to judge without being pulled towards the IFT data's answers: for a seed
    model that already follows instructions (docs/measurements.md, "Which SFT for M1")."""
    m1_self_distill: bool = False
    """With m1_with_ift: M1's IFT examples answer their prompts with M0's own greedy answers instead of
    the data's (self-distillation, SDFT, Yang et al. 2024; step `self_distill`, RUN/self_distill/), so that
    M1 learns to judge while the way it answers stays the seed model's."""
    self_distill_max_new_tokens: int = Field(512, ge=1)
    """Token budget of M0's self-distillation answers; answers cut at it are dropped (counted)."""
    m1_epochs: float | None = Field(None, gt=0)
    """M1's epochs; None: `epochs`. The SFT baseline always trains `epochs`, so that a smaller dose for
    M1 (enough to learn the judge format, little enough to keep the seed model's answers) leaves the
    EFT data it writes as it was."""

    def for_m1(self) -> SFTTrainingConfig:
        """These settings as M1's SFT trains with them (`m1_epochs`)."""
        return self if self.m1_epochs is None else self.model_copy(update={"epochs": self.m1_epochs})

    @model_validator(mode="after")
    def _distill_needs_ift(self) -> SFTTrainingConfig:
        if self.m1_self_distill and not self.m1_with_ift:
            raise ValueError(
                "m1_self_distill needs m1_with_ift (it answers the IFT prompts with M0's own answers); "
                "for M1 on EFT only set m1_self_distill false too"
            )
        return self


class DPOTrainingConfig(TrainingConfig):
    learning_rate: float = Field(1e-6, gt=0)
    """Peak learning rate (the paper: 1e-6)."""
    final_learning_rate: float = Field(1e-7, ge=0)
    """The rate decays linearly to this (the paper: 1e-7)."""
    bf16: bool | Literal["auto"] = False
    """fp32 by default: bf16 DPO margins on small models are rounding noise."""
    beta: float = Field(0.1, gt=0)
    """DPO's KL strength: how far M_{t+1} may move from its reference per unit of preference (the paper: 0.1)."""
    loss_type: list[TRLLossType] = Field(["sigmoid"], min_length=1)
    """TRL's DPO loss, or several summed (TRL's loss_type list), weighted by `loss_weights`."""
    loss_weights: list[float] | None = None
    """One weight per `loss_type` entry (TRL's loss_weights, e.g. MPO's [0.8, 0.2, 1.0]); None: all 1."""
    label_smoothing: float | Literal["cream"] = 0.0
    """Conservative DPO: train as if each pair's preference were wrong with this probability (0 <= eps < 0.5;
    needs loss_type [sigmoid]). `cream`: per iteration eps = (1 - tau) / 2, tau the mean Kendall rank
    agreement between M_t's and M_{t-1}'s scores of the same candidates (CREAM, Wang et al., ICLR 2025;
    stage `consistency`, ITER/consistency.stats.json): the less the two judges agree, the softer the labels."""
    rpo_alpha: float | None = Field(None, gt=0)
    """Iterative RPO (Pang et al. 2024): add rpo_alpha x the NLL of the chosen answer (TRL's `sft`
    loss, per token) to the DPO loss; None: plain DPO."""
    reference: str = "previous"
    """The reference model of M_{t+1}'s DPO: `previous` = M_t, the model being trained (the paper);
    `initial` (alias `m1`) = M1, the first self-rewarding model; `sft` = the SFT baseline (needs
    it trained: sft.baseline or eft.judge baseline); or a model path/id."""
    eval_fraction: float = Field(0.2, ge=0, lt=1)
    """Share of each iteration's pairs held out from training (seeded by pair id) to check, before and
    after, that DPO's implicit reward prefers their chosen answers (`dpo{t}/validation.stats.json`); 0: off."""
    min_eval_pairs: int = Field(4, ge=1)
    """Hold out at least this many pairs (never more than half of them) when eval_fraction is above 0."""
    precompute_ref_log_probs: bool = False
    """Compute the reference's log-probabilities of every pair in one pass before training (TRL's
    precompute_ref_log_probs, batches of micro_batch_size) instead of a reference forward pass in every
    step: with full fine-tuning no second copy of the model stays in memory. Same loss (bench/dpo_speed.py)."""

    @field_validator("loss_type", mode="before")
    @classmethod
    def _one_loss(cls, value: Any) -> Any:
        """A single name stands for a one-item list."""
        return [value] if isinstance(value, str) else value

    @field_validator("loss_weights")
    @classmethod
    def _one_weight_per_loss(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        losses = info.data.get("loss_type")
        if value is not None and losses is not None and len(value) != len(losses):
            raise ValueError(
                f"{len(value)} weights for {len(losses)} losses ({', '.join(losses)}): give one weight per dpo.loss_type entry"
            )
        return value

    @field_validator("label_smoothing")
    @classmethod
    def _smoothing_of_dpo(cls, value: float | str, info: ValidationInfo) -> float | str:
        if isinstance(value, float) and not 0 <= value < 0.5:
            raise ValueError("must be at least 0 and below 0.5 (or `cream`)")
        if (value == "cream" or value) and info.data.get("loss_type") != ["sigmoid"]:
            raise ValueError("label smoothing makes DPO's sigmoid loss conservative: it needs dpo.loss_type [sigmoid]")
        return value

    @field_validator("rpo_alpha")
    @classmethod
    def _rpo_adds_sft(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and "sft" in info.data.get("loss_type", []):
            raise ValueError("rpo_alpha adds TRL's sft loss itself: drop sft from dpo.loss_type or set rpo_alpha null")
        return value


class LoopConfig(Section):
    iterations: int = Field(2, ge=0)
    """DPO iterations after M1: 2 gives M2 and M3 as in the paper."""
    on_no_pairs: Literal["stop", "skip"] = "stop"
    """An iteration with zero pairs: stop the run cleanly, or skip its DPO (M_{t+1} = M_t)."""


class LocalJudgeConfig(Section):
    """A judge other than the model being trained, loaded here like any checkpoint (`kind: hf`)."""

    kind: Literal["hf"] = "hf"
    """`hf`: a model loaded like any checkpoint, on this machine's engine (`engine.kind`)."""
    model: str | None = None
    """A model path/id; None: the default of the place it judges (M0 for eval.judge, M_t for select.judge)."""
    temperature: float = Field(0.0, ge=0)
    """eval.judge, select.judge: sampling temperature of its verdicts (eft.teacher samples with the `judge` section's)."""
    max_new_tokens: int = Field(256, gt=0)
    """eval.judge, select.judge: longest verdict in tokens (eft.teacher uses the `judge` section's)."""


class ServerJudgeConfig(Section):
    """A judge behind an OpenAI-compatible server (vLLM, TGI, a hosted API; `kind: openai`)."""

    kind: Literal["openai"] = "openai"
    """`openai`: requests go to `base_url` with the OpenAI chat-completions protocol."""
    model: str
    """The server's model name."""
    base_url: str
    """The server's base URL, e.g. http://localhost:8000/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key (the key itself is never stored)."""
    temperature: float = Field(0.0, ge=0)
    """eval.judge, select.judge: sampling temperature of its verdicts (eft.teacher samples with the `judge` section's)."""
    max_new_tokens: int = Field(256, gt=0)
    """eval.judge, select.judge: longest verdict in tokens (eft.teacher uses the `judge` section's)."""
    timeout: float = Field(120.0, gt=0)
    """Seconds one HTTP request may take (connect, send, each read) before it counts as failed."""
    concurrency: int = Field(8, gt=0)
    """Requests in flight at once."""
    max_retries: int = Field(5, ge=0)
    """Times a request is sent again after a timeout, connection error, truncated or malformed
    reply, HTTP 408, 429 or 5xx; a request still failing then stops the stage (other 4xx stop it at once)."""
    backoff_initial: float = Field(1.0, gt=0)
    """Seconds before the first retry; doubles each retry, plus up to as much random jitter."""
    backoff_max: float = Field(30.0, gt=0)
    """Longest wait between retries, also the cap on a server's Retry-After."""
    max_consecutive_failures: int = Field(10, gt=0)
    """Circuit breaker: this many failed attempts in a row (across concurrent requests, no success
    between) stop the stage at once; requests not yet sent are not sent."""

    @model_validator(mode="after")
    def _check_backoff(self) -> ServerJudgeConfig:
        if self.backoff_max < self.backoff_initial:
            raise ValueError(f"backoff_max ({self.backoff_max}) is below backoff_initial ({self.backoff_initial})")
        return self


def _judge_kind(value: Any) -> str:
    """The `kind` that picks a judge's section (`hf` when not given)."""
    return str((value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)) or "hf")


JudgeEngineConfig = Annotated[
    Annotated[LocalJudgeConfig, Tag("hf")] | Annotated[ServerJudgeConfig, Tag("openai")],
    Discriminator(_judge_kind, custom_error_type="judge_kind", custom_error_message="kind must be hf or openai"),
]
"""A judge other than the model being trained: a local model (`kind: hf`) or a server (`kind: openai`)."""


class EFTConfig(Section):
    """Evaluation fine-tuning data from human-ranked groups (see selfreward/stages/eft.py)."""

    strategy: Literal["self", "rationalize", "teacher"] = "self"
    """self: the judge model's own judgments that agree with the ranking (the paper);
    rationalize: targets from the human labels, the judge model writes the justification;
    teacher: another model or server writes judgments, filtered like `self`."""
    judge: str = "baseline"
    """Model writing judgments (self) or justifications (rationalize): `baseline` (the SFT
    baseline, as in the paper), `m0` (the seed model) or a model path/id."""
    samples: int = Field(1, gt=0)
    """self/teacher: judgments per response; a group is kept when some choice of one sample per
    response agrees with the ranking."""
    max_justification_words: int = Field(100, gt=0)
    """rationalize: justifications are cut to this many words (the judge prompt asks for up to 100)."""
    teacher: JudgeEngineConfig | None = None
    """teacher: the model or server that judges."""
    eval_fraction: float = Field(0.25, ge=0, lt=1)
    """Share of ranked prompts held out (by prompt) as the reward-modelling test set."""
    exclude_prompts_from: list[str] = []
    """Sources whose prompts never enter training, IFT or EFT (e.g. a held-out evaluation set)."""
    max_groups: int | None = Field(None, gt=0)
    """Use at most this many training groups (None: all)."""
    downsample: bool = True
    """Down-sample the most frequent score to the count of the second most frequent."""

    @model_validator(mode="after")
    def _check_teacher(self) -> EFTConfig:
        if self.strategy == "teacher" and self.teacher is None:
            raise ValueError("eft.strategy teacher needs eft.teacher (kind, model, base_url)")
        return self


class SelectConfig(Section):
    """Checkpoint selection (the paper): M_{t+1} is the DPO checkpoint (or the final model) whose
    answers to validation prompts win most often against M_t's, judged pairwise in both orders."""

    enabled: bool = False
    """After each DPO stage, compare its Trainer checkpoints (every dpo.save_steps) and its final
    model with M_t and promote the best to M_{t+1}; off: M_{t+1} is the final model."""
    prompts: list[str] = ["eft-eval"]
    """Validation prompts, as eval.prompts: `eft-eval` (the held-out EFT prompts) or IFT-style
    sources. Selecting on the prompts `selfreward eval` tests on makes those results optimistic."""
    max_prompts: int = Field(253, gt=0)
    """Use at most this many validation prompts (the paper: 253)."""
    judge: JudgeEngineConfig = LocalJudgeConfig()
    """Who compares the answers: kind hf with model null is M_t itself (the loop's own judge), a
    model path/id, or kind openai (a server). Its temperature and max_new_tokens apply; answers are
    sampled as eval.answer_temperature and eval.answer_max_new_tokens say."""


class IFEvalConfig(Section):
    """`selfreward ifeval`: instruction following scored by lm-eval's IFEval checkers, no judge."""

    prompts: str | None = None
    """IFEval prompts in google's `input_data.jsonl` format; null: the `google/IFEval` dataset
    through `datasets` (needs the network or its cache). `--prompts FILE` overrides it."""
    max_new_tokens: int = Field(512, gt=0)
    """Greedy answer length for a prompt without a length constraint."""
    max_new_tokens_limit: int = Field(1280, gt=0)
    """Most new tokens for a prompt whose length constraint needs more (lm-eval's IFEval budget)."""


class EvalConfig(Section):
    ranked: list[str] = []
    """Held-out ranked groups for reward-model metrics, besides the run's EFT eval split."""
    rm_samples: int = Field(3, gt=0)
    """Judgments per response; the valid ones are averaged."""
    rm_max_groups: int | None = Field(None, gt=0)
    """Judge at most this many groups of each ranked set (None: all)."""
    prompts: list[str] = ["eft-eval"]
    """Test prompts for head-to-head: `eft-eval` (the held-out EFT prompts) or IFT-style sources."""
    max_prompts: int = Field(256, gt=0)
    """Head-to-head test prompts, at most (the paper: 256)."""
    answer_temperature: float = Field(0.0, ge=0)
    """Sampling temperature of the models' test answers (0: greedy)."""
    answer_max_new_tokens: int = Field(512, gt=0)
    """Longest test answer."""
    judge: JudgeEngineConfig = LocalJudgeConfig()
    """Who compares answers in head-to-head and benchmarks: a local model (default: M0) or an OpenAI-compatible server."""
    after_iteration: bool = False
    """Evaluate each new model as soon as it is trained (otherwise: `selfreward eval RUN_DIR`)."""
    ifeval: IFEvalConfig = IFEvalConfig()
    """Settings of `selfreward ifeval` (judge-free instruction following)."""


class Config(Section):
    seed: int = 0
    """The RNG seed: every stage derives its own seeds from it and a stable key (resumes repeat the same draws)."""
    model: ModelConfig = ModelConfig()
    """The seed model M0 and how models are loaded."""
    engine: EngineConfig = EngineConfig()
    """How text is generated (transformers or vLLM)."""
    data: DataConfig = DataConfig()
    """Seed data: IFT examples and human-ranked groups."""
    prompts: PromptsConfig = PromptsConfig()
    """New prompts by few-shot self-instruct (AIFT step 1)."""
    candidates: CandidatesConfig = CandidatesConfig()
    """N answers per prompt (AIFT step 2)."""
    judge: JudgeConfig = JudgeConfig()
    """How M_t judges its own answers (AIFT step 3)."""
    pairs: PairsConfig = PairsConfig()
    """Preference pairs from the judged answers (AIFT step 4)."""
    meta: MetaConfig = MetaConfig()
    """The meta-judge of Meta-Rewarding: the model also learns to judge."""
    eft: EFTConfig = EFTConfig()
    """Evaluation fine-tuning data: the judge task learned from human-ranked groups."""
    sft: SFTTrainingConfig = SFTTrainingConfig()
    """Supervised fine-tuning of the SFT baseline (IFT) and of M1 (IFT + EFT, or EFT: `sft.m1_with_ift`)."""
    dpo: DPOTrainingConfig = DPOTrainingConfig()
    """DPO of M_{t+1} from M_t on AIFT(M_t)."""
    loop: LoopConfig = LoopConfig()
    """How many self-rewarding iterations, and what an iteration without pairs does."""
    eval: EvalConfig = EvalConfig()
    """Evaluation: reward modelling, head-to-head, IFEval, benchmarks."""
    select: SelectConfig = SelectConfig()
    """Checkpoint selection: M_{t+1} is the DPO checkpoint that wins most against M_t."""

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.prompts.min_words > self.prompts.max_words:
            raise ValueError("prompts.min_words must not exceed prompts.max_words")
        if self.dpo.reference.lower() == "sft" and not (self.sft.baseline or self.eft.judge == "baseline"):
            raise ValueError("dpo.reference sft needs the SFT baseline: set sft.baseline true")
        if self.meta.enabled and self.judge.kind == "implicit":
            raise ValueError(
                "meta.enabled compares written judgments, and judge.kind implicit writes none: turn one of them off"
            )
        if self.meta.enabled and self.pairs.policy == "spin":
            raise ValueError("meta.enabled needs judge scores, and pairs.policy spin makes none: turn one of them off")
        if self.select.enabled and self.dpo.lora is not None:
            raise ValueError(
                "select.enabled needs full-model DPO checkpoints, and with dpo.lora they hold adapters only: set dpo.lora null or select.enabled false"
            )
        return self


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SelfRewardError(f"config {path}: not UTF-8 text") from None
    except OSError as exc:
        raise SelfRewardError(f"config {path}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml_load(text) or {}
    except (yaml.YAMLError, RecursionError) as exc:
        raise SelfRewardError(f"config {path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise SelfRewardError(f"config {path}: the top level must be a mapping of keys")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_raw(source: str | None, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset name or a YAML path -> raw dict. A file may name a preset to build on with `base:`
    (`chain`: the files that named this one, to refuse loops)."""
    source = source or "demo"
    path = Path(source)
    if not path.suffix and not path.exists():
        path = PRESETS_DIR / f"{source}.yaml"
        if not path.exists():
            raise SelfRewardError(
                f"unknown preset {source!r} (presets: {', '.join(preset_names())}; or give a YAML file)"
            )
    elif not path.is_file():
        raise SelfRewardError(f"config file not found: {source}")
    if path.resolve() in chain:
        raise SelfRewardError(f"config {chain[-1]}: `base` leads back to {path} (a loop)")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise SelfRewardError(f"config {path}: `base` must name another preset or YAML file")
        data = _merge(load_raw(base, (*chain, path.resolve())), data)
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["judge.k=5", "data.ift=[a.jsonl]"]` -> nested dict; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SelfRewardError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml_load(raw) if raw.strip() else None
        except (yaml.YAMLError, RecursionError):  # not YAML (or nested too deeply): the plain string
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SelfRewardError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return out


UNION_TAGS = {"hf", "openai"}
"""The tags pydantic puts in an error's location inside a judge section (`eval.judge.openai.model`): left out."""


def format_validation_error(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"] if p not in UNION_TAGS) or "config"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        else:
            problems.append(f"{key}: {err['msg'].removeprefix('Value error, ')} (got {quoted(err.get('input'))})")
    return "config error: " + "; ".join(problems)


def build_config(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise SelfRewardError(format_validation_error(exc)) from None


def load_config(source: str | None = None, overrides: list[str] | None = None) -> Config:
    return build_config(_merge(load_raw(source), parse_overrides(overrides or [])))


def config_to_dict(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
