"""The HF engine's shared-prefix sampler (`generate_n`) against plain `generate` on the tiny model."""

from __future__ import annotations

import pytest
import torch

from selfreward.config import ModelConfig
from selfreward.engines.base import Engine, Request, Sampling
from selfreward.engines.shared_prefix import Sample, StopWatch, shared_prefix_length, token_history

RUBRIC = "Explain how the answer is scored, with the list of what is checked and why. " * 4


@pytest.fixture(scope="module")
def engine(tiny_model):
    from selfreward.engines.hf import HFEngine

    engine = HFEngine(ModelConfig(name_or_path=str(tiny_model), dtype="float32", max_length=4096), batch_size=6)
    yield engine
    engine.close()


def requests() -> list[Request]:
    return [Request.user(f"{RUBRIC}\nTask: {'write a list of what to answer ' * k}") for k in (1, 4, 2, 6)]


def test_shared_prefix_length_leaves_each_row_a_token():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_length([[7], [7, 8]]) == 0


def test_token_history_pads_with_each_rows_first_token():
    history = token_history([[5, 6, 7], [8]], [Sample([1], False), Sample([2, 3], False)], [0, 1])
    assert history.tolist() == [[5, 6, 7, 1], [8, 8, 2, 3]]


def test_greedy_samples_match_plain_generate(engine, monkeypatch):
    """Shared prefill, padding between the prefix and a prompt's own tokens, and dropping finished
    rows give the tokens `model.generate` gives (no EOS bias here, so all run to the limit)."""
    monkeypatch.setattr(engine.model.generation_config, "sequence_bias", None)
    sampling = Sampling(0.0, 1.0, 12)
    shared = engine.generate_n(requests(), 2, sampling, [1, 2, 3, 4])
    plain = Engine.generate_n(engine, requests(), 2, sampling, [0])
    assert [[c.text for c in g] for g in shared] == [[c.text for c in g] for g in plain]
    assert all(c.num_tokens == 12 and not c.finished for g in shared for c in g)


def test_samples_depend_on_their_request_seed_not_on_the_batch(engine):
    sampling = Sampling(0.9, 0.95, 16)
    alone = engine.generate_n(requests()[2:3], 3, sampling, [42])[0]
    together = engine.generate_n(requests(), 3, sampling, [7, 8, 42, 9])[2]
    assert [c.text for c in alone] == [c.text for c in together]
    again = engine.generate_n(requests()[2:3], 3, sampling, [43])[0]
    assert [c.text for c in again] != [c.text for c in alone]
    assert len({c.text for c in alone}) > 1  # the 3 samples of one request differ


def test_sequence_bias_of_the_model_is_applied(engine):
    """The tiny model ends its answers through an EOS bias in its generation config."""
    completions = engine.generate_n(requests(), 2, Sampling(0.7, 0.9, 64), [1, 2, 3, 4])
    assert sum(c.finished for g in completions for c in g) >= 6


def test_a_stop_string_ends_the_sample_and_stays_in_its_text(engine, monkeypatch):
    """The same seed draws the same tokens up to the stop string, then the sample ends."""
    monkeypatch.setattr(engine.model.generation_config, "sequence_bias", None)
    free = engine.generate_n(requests()[:1], 1, Sampling(1.0, 1.0, 24), [1])[0][0]
    stop = free.text[4:8]
    assert len(stop) == 4
    stopped = engine.generate_n(requests()[:1], 1, Sampling(1.0, 1.0, 24, stop=(stop,)), [1])[0][0]
    assert stopped.finished and stopped.text.endswith(stop) and free.text.startswith(stopped.text)
    assert stopped.num_tokens < free.num_tokens


def test_stop_watch_sees_a_stop_string_split_over_tokens(engine):
    tokens = engine.tokenizer.encode("the answer is good. Score: 4\n", add_special_tokens=False)
    watch = StopWatch(engine.tokenizer, ("Score: 4\n",))
    assert watch.check(tokens) == "Score: 4\n"
    assert watch.check(tokens[:-1]) is None


def test_fallback_generate_n_repeats_requests_in_one_batch(engine):
    completions = Engine.generate_n(engine, requests()[:2], 3, Sampling(0.7, 0.9, 8), [5, 6])
    assert [len(g) for g in completions] == [3, 3]


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.999, 1.0])
def test_nucleus_keeps_what_transformers_top_p_keeps(top_p):
    """Same kept tokens and probabilities as TopPLogitsWarper, also for flat rows whose nucleus
    lies beyond the first NUCLEUS_CANDIDATES tokens."""
    from transformers.generation.logits_process import TopPLogitsWarper

    from selfreward.engines.shared_prefix import nucleus

    generator = torch.Generator().manual_seed(0)
    scores = torch.cat([torch.randn(4, 5000, generator=generator) * 6, torch.randn(2, 5000, generator=generator) * 0.1])
    ids, probs = nucleus(scores, top_p)
    expected = torch.softmax(TopPLogitsWarper(top_p)(None, scores.clone()), dim=-1)
    got = torch.zeros_like(expected).scatter_(-1, ids, probs)
    assert torch.equal(got > 0, expected > 0)
    assert torch.allclose(got, expected, atol=1e-6)
