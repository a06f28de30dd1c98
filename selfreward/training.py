"""What SFT and DPO share: TRL arguments from our config, dropout, precision, checkpoints, metrics."""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import typing
from collections.abc import Callable
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from pydantic import BaseModel

from selfreward.config import ModelConfig, TrainingConfig, accelerate_config_path, accelerate_distributed_type
from selfreward.errors import SelfRewardError
from selfreward.models import cpu_supports_bf16, load_model, load_tokenizer, loading_switches, resolve_model
from selfreward.records import read_json, write_json


def use_bf16(setting: bool | str, device: str) -> bool:
    if setting != "auto":
        return bool(setting)
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def weights_dtype(train: TrainingConfig, device: str) -> torch.dtype:
    """`train.weights_dtype`; auto: bf16 on a bf16 GPU when the trained weights keep fp32 elsewhere
    (LoRA adapters, DeepSpeed's master copy), fp32 otherwise (mixed precision comes from the Trainer).
    With `quantize` always bf16: the unquantized layers, the 4-bit layers' compute, the merged model."""
    if train.quantize:
        return torch.bfloat16
    if train.weights_dtype != "auto":
        return getattr(torch, train.weights_dtype)
    fp32_elsewhere = train.lora is not None or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    return torch.bfloat16 if device == "cuda" and use_bf16(train.bf16, device) and fp32_elsewhere else torch.float32


def load_for_training(
    model_config: ModelConfig, name_or_path: str, train: TrainingConfig, device: str, section: str
) -> tuple[Any, Any]:
    """The model (in `weights_dtype`, or 4-bit with `quantize`) with the configured dropout, and its
    tokenizer. It stays where it loaded: the Trainer (or DeepSpeed, which may shard it while loading) places it."""
    path = resolve_model(name_or_path)
    tokenizer = load_tokenizer(path, train.max_length, model_config.trust_remote_code)
    options: dict[str, Any] = {}
    if train.quantize:
        if device != "cuda":
            raise SelfRewardError(
                f"{section}.quantize={train.quantize} needs a CUDA GPU (bitsandbytes); this run trains on {device}"
            )
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        options["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = load_model(path, weights_dtype(train, device), None, **loading_switches(model_config), **options)
    set_dropout(model, train.dropout)
    return model, tokenizer


def lora_config(train: TrainingConfig) -> Any:
    """PEFT's LoraConfig from `train.lora` (None: full fine-tuning), for the trainers' `peft_config`."""
    if train.lora is None:
        return None
    from peft import LoraConfig

    lora = train.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def merge_base(
    model_config: ModelConfig, name_or_path: str, train: TrainingConfig, device: str
) -> Callable[[], Any] | None:
    """With LoRA, a loader of the unquantized base weights (in `weights_dtype`) on CPU that the
    adapter is merged into; None for full fine-tuning."""
    if train.lora is None:
        return None
    return partial(
        load_model,
        resolve_model(name_or_path),
        weights_dtype(train, device),
        "cpu",
        model_config.trust_remote_code,
        model_config.allow_pickle,
    )


def set_dropout(model: Any, rate: float) -> None:
    """Train with dropout `rate` on every dropout module and attention-dropout attribute (Llama,
    Mistral, Qwen read `attention_dropout` at init). `model.config` is left alone, so the saved
    checkpoint keeps the base model's settings and inference never inherits the training rate."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = rate
        elif isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = rate


def conversation_tokens(tokenizer: Any, prompt: str, completion: str) -> int:
    """Tokens of a prompt/answer exchange rendered with the chat template, as the trainers see it."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fits_length(tokenizer: Any, prompt: str, completions: list[str], max_length: int) -> bool:
    """True when every prompt + completion fits `max_length`: longer ones would be cut by the
    trainer from the end, losing the target (an EFT score, an answer's end)."""
    return all(conversation_tokens(tokenizer, prompt, c) <= max_length for c in completions)


def trainer_arguments(train: TrainingConfig, output_dir: Path, seed: int, device: str) -> dict[str, Any]:
    """Keyword arguments shared by TRL's SFTTrainingConfig and DPOTrainingConfig."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set in `accelerate launch` workers
    if processes == 1 and device == "cuda":  # one process, several GPUs: the Trainer's DataParallel
        processes = max(1, torch.cuda.device_count())
    accumulation = max(1, train.batch_size // (train.micro_batch_size * processes))
    return {
        "output_dir": str(output_dir),
        "learning_rate": train.learning_rate,
        "lr_scheduler_type": "polynomial",  # power 1: linear decay from learning_rate to lr_end
        "lr_scheduler_kwargs": {"lr_end": train.final_learning_rate, "power": 1.0},
        "warmup_steps": 0,
        "per_device_train_batch_size": train.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "num_train_epochs": train.epochs,
        "max_length": train.max_length,
        "bf16": use_bf16(train.bf16, device),
        checkpointing_argument(): train.gradient_checkpointing,
        "use_cpu": device == "cpu",
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "logging_steps": 1,
        "report_to": train.report_to or "none",
        "seed": seed,
        "data_seed": seed,
        "disable_tqdm": False,
    }


def checkpointing_argument() -> str:
    """Transformers' name for activation checkpointing: `activation_checkpointing` where it exists,
    `gradient_checkpointing` in transformers 5.20 (the newest vllm 0.33 accepts), which predates it."""
    from transformers import TrainingArguments

    return (
        "activation_checkpointing"
        if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
        else "gradient_checkpointing"
    )


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """The complete Trainer checkpoints in step order (one a kill cut short has no
    trainer_state.json, which Transformers writes last). None is deleted: no save_total_limit."""
    complete = [
        p
        for p in output_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()
    ]
    return sorted(complete, key=checkpoint_step)


def latest_checkpoint(output_dir: Path) -> str | None:
    """The newest complete Trainer checkpoint."""
    complete = complete_checkpoints(output_dir)
    return str(complete[-1]) if complete else None


def no_last_step_checkpoint() -> Any:
    """A Trainer callback that skips the checkpoint Transformers saves at the last step: the final
    model is saved right after it, and nothing reads its optimizer state (a checkpoint with it
    is ~16 bytes per parameter). A kill between the last step and the final save resumes from the
    checkpoint before and trains the last steps again."""
    from transformers import TrainerCallback

    class NoLastStepCheckpoint(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.global_step >= state.max_steps:
                control.should_save = False
            return control

    return NoLastStepCheckpoint()


def save_final(trainer: Any, tokenizer: Any, target: Path, base: Callable[[], Any] | None) -> None:
    """Save a plain Hugging Face checkpoint (safetensors) atomically: a temp dir, then a rename.
    Every worker process takes part (DeepSpeed and FSDP gather sharded weights); the first writes.
    With LoRA (`base`: a loader of the base weights) the adapter is saved beside the stage's
    trainer directory and merged into the base, so the checkpoint is a full model any engine loads."""
    tmp = target.with_name(target.name + ".tmp")
    writer = trainer.is_world_process_zero()
    if writer:
        shutil.rmtree(tmp, ignore_errors=True)
    if base is None:
        trainer.save_model(str(tmp))
    else:
        adapter = Path(trainer.args.output_dir).parent / "adapter"
        trainer.save_model(str(adapter))
        if writer:
            from peft import PeftModel

            PeftModel.from_pretrained(base(), str(adapter)).merge_and_unload().save_pretrained(str(tmp))
    if writer:
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)


def log_metrics(trainer: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """First/last/mean of per-step logged values, plus the trainer's final summary."""
    history = [h for h in trainer.state.log_history if "loss" in h]
    out: dict[str, Any] = {"steps": trainer.state.global_step}
    for key in keys:
        values = [h[key] for h in history if key in h and isinstance(h[key], (int, float)) and math.isfinite(h[key])]
        if values:
            name = key.replace("rewards/", "reward_")
            out[f"{name}_first"] = round(values[0], 4)
            out[f"{name}_last"] = round(values[-1], 4)
            out[f"{name}_mean"] = round(sum(values) / len(values), 4)
    if (
        "loss_mean" in out
    ):  # over every step, also after a resume (Transformers' own train_loss covers the last attempt only)
        out["train_loss"] = out["loss_mean"]
    return out


def score_labelled_positions_only() -> None:
    """Let TRL's fused LM head score only the positions that have a label when training on a CPU.

    TRL 1.16 does so on Triton devices only; elsewhere it scores every position, so that compilers
    with fixed tile shapes (Neuron's) never see a new one. Eager CPU training compiles nothing,
    and an EFT example labels ~40 of its ~600 tokens: M1's SFT then runs 1.35x faster, with the same
    losses up to bf16 rounding (docs/measurements.md). Idempotent; a no-op where TRL no longer has the switch."""
    import trl.trainer.utils as trl_utils

    switch = getattr(trl_utils, "_use_triton", None)
    if switch is None or getattr(switch, "labelled_only_on_cpu", False):
        return

    def labelled_only_on_cpu(device: torch.device) -> bool:
        return device.type == "cpu" or bool(switch(device))

    labelled_only_on_cpu.labelled_only_on_cpu = True  # type: ignore[attr-defined]
    trl_utils._use_triton = labelled_only_on_cpu


def train_and_save(
    trainer: Any,
    tokenizer: Any,
    target: Path,
    metric_keys: tuple[str, ...],
    base: Callable[[], Any] | None,
    stats: dict[str, Any],
    stats_file: Path,
) -> dict[str, Any]:
    """Train (from the stage's last Trainer checkpoint, if any), save `target`, write `stats` with
    the training figures to `stats_file` (the first worker process) and return them."""
    score_labelled_positions_only()
    started = time.perf_counter()
    trainer.add_callback(no_last_step_checkpoint())
    trainer.train(resume_from_checkpoint=latest_checkpoint(Path(trainer.args.output_dir)))
    save_final(trainer, tokenizer, target, base)
    figures = {"bf16": trainer.args.bf16, "lora": base is not None, **log_metrics(trainer, metric_keys)}
    stats = {
        **stats,
        **figures,
        "seconds": round(time.perf_counter() - started, 1),
        "model": str(target),
        "pid": os.getpid(),
    }
    if trainer.is_world_process_zero():
        write_json(stats_file, stats)
    return stats


class TrainingStep(Protocol):
    """A training step (selfreward.stages.sft.TrainSFT, selfreward.stages.dpo.TrainDPO): a dataclass whose
    fields are all a worker process needs, and which trains in the process that calls `train_here`."""

    kind: ClassVar[str]

    @property
    def model_config(self) -> ModelConfig: ...

    @property
    def stage_dir(self) -> Path: ...

    @property
    def child(self) -> bool: ...

    @property
    def config(self) -> TrainingConfig: ...

    @property
    def stats_file(self) -> Path: ...

    def train_here(self) -> dict[str, Any]: ...


def child_process(train: TrainingConfig, engine_kind: str) -> bool:
    """`train.child_process`: auto trains in a child process when generation runs on vLLM, which
    needs the GPU memory that training held back when it starts (a process returns all of it at exit)."""
    return train.child_process is True or (train.child_process == "auto" and engine_kind == "vllm")


def encode(step: Any) -> dict[str, Any]:
    """A step's fields as JSON values (config sections dumped, paths as strings, tuples as lists)."""

    def value(v: Any) -> Any:
        if isinstance(v, BaseModel):
            return v.model_dump(mode="json")
        if isinstance(v, Path):
            return str(v)
        return [value(x) for x in v] if isinstance(v, list | tuple) else v

    return {f.name: value(getattr(step, f.name)) for f in dataclasses.fields(step)}


def decode(cls: Any, fields: dict[str, Any]) -> Any:
    """The step `encode` wrote: each field rebuilt by its annotated type."""
    hints = typing.get_type_hints(cls)

    def value(kind: Any, v: Any) -> Any:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind.model_validate(v)
        if kind is Path:
            return Path(v)
        if (
            typing.get_origin(kind) is list
            and typing.get_args(kind)
            and typing.get_origin(typing.get_args(kind)[0]) is tuple
        ):
            return [tuple(x) for x in v]
        return v

    return cls(**{f.name: value(hints[f.name], fields[f.name]) for f in dataclasses.fields(cls)})


def accelerate_launcher(train: TrainingConfig, device: str) -> list[str]:
    """`-m accelerate.commands.launch ...` with `accelerate_config`; nothing for a plain child process."""
    if train.accelerate_config is None:
        return []
    precision = "bf16" if use_bf16(train.bf16, device) else "no"
    processes = ["--num_processes", str(train.num_processes)] if train.num_processes else []
    return [
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config_path(train.accelerate_config)),
        "--mixed_precision",
        precision,
        *processes,
    ]


def launch(step: TrainingStep, device: str) -> dict[str, Any]:
    """`step.train_here()` in this process; with `accelerate_config` in `accelerate launch` workers, with
    `step.child` in one child process. Workers run `python -m selfreward.launch STAGE_DIR/launch.json`
    (the step's kind and fields), which trains and writes the stats file; their output goes to
    STAGE_DIR/launch.log. Returns the stats."""
    train = step.config
    if train.accelerate_config is None and not step.child:
        return step.train_here()
    if (
        train.accelerate_config
        and accelerate_distributed_type(train.accelerate_config) == "DEEPSPEED"
        and find_spec("deepspeed") is None
    ):
        raise SelfRewardError(
            f"{step.kind}.accelerate_config={train.accelerate_config} needs DeepSpeed: pip install deepspeed"
        )
    step.stage_dir.mkdir(parents=True, exist_ok=True)
    spec, log, error = step.stage_dir / "launch.json", step.stage_dir / "launch.log", step.stage_dir / "launch.error"
    for stale in (step.stats_file, error):
        stale.unlink(missing_ok=True)
    write_json(spec, {"step": step.kind, "fields": encode(step)})
    command = [sys.executable, *accelerate_launcher(train, device), "-m", "selfreward.launch", str(spec)]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0 or not step.stats_file.exists():
        reason = error.read_text(encoding="utf-8").strip() if error.exists() else f"exit status {code}"
        raise SelfRewardError(f"[{step.stage_dir.name}] training in worker processes failed: {reason} (log: {log})")
    return read_json(step.stats_file)
