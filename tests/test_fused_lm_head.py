"""CPU training scores only the labelled positions in TRL's fused LM head, with the same values."""

from __future__ import annotations

import torch
import trl.trainer.utils as trl_utils
from transformers import AutoModelForCausalLM
from trl.kernels.chunked_logprob import _use_triton as trl_switch

from selfreward.training import score_labelled_positions_only


def test_only_labelled_positions_are_scored_with_the_same_log_probs(tiny_model, monkeypatch):
    # TRL's own switch (an earlier training test in this process may have wrapped it); restored after
    monkeypatch.setattr(trl_utils, "_use_triton", trl_switch)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    torch.manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (2, 12))
    labels = input_ids.clone()
    labels[:, :8] = -100  # a prompt: 4 of the 11 shifted positions per row have a label
    rows_scored = []
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(
        trl_utils._ChunkedLogProbFunction,
        "apply",
        lambda hidden, *rest: rows_scored.append(hidden.shape[0]) or apply(hidden, *rest),
    )

    every = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
    score_labelled_positions_only()
    switch = trl_utils._use_triton
    score_labelled_positions_only()
    assert trl_utils._use_triton is switch  # idempotent: wrapped once
    labelled = model(input_ids=input_ids, labels=labels, fused_lm_head=True)

    assert rows_scored == [2 * 11, 2 * 4]
    assert torch.allclose(every.log_probs, labelled.log_probs, atol=1e-6) and torch.allclose(
        every.loss, labelled.loss, atol=1e-6
    )
    assert torch.equal(every.label_mask, labelled.label_mask)
