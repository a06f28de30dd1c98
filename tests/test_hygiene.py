"""Nothing is cut or baked in silently: judge prompts that do not fit, over-long training examples,
the base-model chat template's BOS, and training dropout in saved checkpoints."""

from __future__ import annotations

import json
import shutil

from selfreward.config import ModelConfig, SFTTrainingConfig
from selfreward.engines.base import Engine, Request
from selfreward.engines.hf import HFEngine
from selfreward.judging.prompt import SHORTENED_MARKER, fitted_request
from selfreward.models import load_tokenizer
from selfreward.prompts import load_template
from selfreward.training import conversation_tokens, fits_length, load_for_training

TEMPLATE = load_template("judge_additive_5pt")


def fitted_judge_request(template, prompt, response, engine, max_new_tokens):
    return fitted_request(
        template, {"instruction": prompt, "response": response}, ("response",), engine, max_new_tokens
    )


class CharEngine(Engine):
    """Counts one token per character, with a context of `limit`."""

    def __init__(self, limit: int):
        self.limit = limit

    def generate(self, requests, sampling, seed):
        raise AssertionError("not used")

    def context_room(self, request: Request, max_new_tokens: int) -> int:
        return self.limit - max_new_tokens - sum(len(c) for _, c in request.messages)


def test_a_long_response_is_shortened_never_the_rubric():
    response = "word " * 2000
    limit = len(TEMPLATE) + 1500
    request, shortened = fitted_judge_request(TEMPLATE, "What is a word?", response, CharEngine(limit), 100)
    text = request.messages[0][1]
    assert shortened and SHORTENED_MARKER in text
    assert text.startswith(TEMPLATE.split("{instruction}")[0]) and text.endswith(TEMPLATE.split("{response}")[1])
    assert len(text) <= limit - 100 and len(text) > limit - 110  # the longest head that fits
    short, was_shortened = fitted_judge_request(TEMPLATE, "What is a word?", "A short answer.", CharEngine(limit), 100)
    assert not was_shortened and SHORTENED_MARKER not in short.messages[0][1]


def test_engines_that_cannot_count_tokens_send_the_request_as_is():
    class Opaque(CharEngine):
        def context_room(self, request, max_new_tokens):
            return None

    request, shortened = fitted_judge_request(TEMPLATE, "q", "zebra " * 5000, Opaque(10), 100)
    assert not shortened and request.messages[0][1].count("zebra") == 5000


def test_hf_engine_judge_prompt_fits_its_context(tiny_model):
    engine = HFEngine(ModelConfig(name_or_path=str(tiny_model), max_length=2048), batch_size=2)
    request, shortened = fitted_judge_request(TEMPLATE, "Explain tides.", "the tide is a wave " * 1000, engine, 40)
    assert shortened
    assert 0 <= engine.context_room(request, 40) < 40  # fits, and not much more of the response would
    assert "Conclude with the score" in engine.render(request)


def test_base_model_template_starts_with_bos(tiny_model, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = load_tokenizer(str(base), 512)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith(tokenizer.bos_token + "User: Hi") and text.endswith("Assistant:")
    assert tokenizer(text, add_special_tokens=False)["input_ids"][0] == tokenizer.bos_token_id


def test_over_long_training_examples_are_detected(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model), 256)
    short = conversation_tokens(tokenizer, "Explain tides.", "Score: 4")
    assert fits_length(tokenizer, "Explain tides.", ["Score: 4"], short)
    assert not fits_length(tokenizer, "Explain tides.", ["Score: 4", "a longer answer than that"], short)


def test_training_dropout_is_not_written_into_checkpoints(tiny_model, finished_run):
    model, _ = load_for_training(
        ModelConfig(name_or_path=str(tiny_model)), str(tiny_model), SFTTrainingConfig(dropout=0.1), "cpu", "sft"
    )
    rates = {m.attention_dropout for m in model.modules() if isinstance(getattr(m, "attention_dropout", None), float)}
    assert rates == {0.1} and model.config.attention_dropout == 0.0
    base = json.loads((tiny_model / "config.json").read_text())["attention_dropout"]
    for name in ("sft_baseline", "M1", "M2"):
        assert json.loads((finished_run[0] / "models" / name / "config.json").read_text())["attention_dropout"] == base


def test_sft_drops_and_counts_examples_longer_than_max_length(tiny_model, tmp_path):
    from selfreward.stages.sft import TrainSFT
    from selfreward.steps import run_step

    examples = [
        ("Explain tides.", "The moon pulls.\nScore: 4"),
        ("Why is the sky blue?", "Scattering."),
        ("Judge this: " + "word " * 200, "Score: 3"),
    ]
    config = SFTTrainingConfig(max_length=64, batch_size=2, learning_rate=1e-4, final_learning_rate=1e-5)
    stats = run_step(
        TrainSFT(
            "sft",
            ModelConfig(name_or_path=str(tiny_model)),
            config,
            str(tiny_model),
            examples,
            tmp_path / "sft",
            tmp_path / "M",
            0,
        )
    )
    assert (stats["examples"], stats["dropped_too_long"]) == (2, 1)
    assert (tmp_path / "M" / "model.safetensors").exists()
