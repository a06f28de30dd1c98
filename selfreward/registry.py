"""Where the pluggable parts live, by the name the config gives them: a new engine or judge scale is
its own module and one line here (the config checks names against these at load time, and imports
a part only when a run uses it). Pair policies (selfreward.pair_policies.POLICIES), EFT strategies
(selfreward.stages.eft.STRATEGIES) and AIFT steps (selfreward.recipes.aift.AIFT_STEPS) are
registered beside their code, which the config does not need to load."""

from __future__ import annotations

import importlib
from typing import Any

ENGINES = {
    "hf": "selfreward.engines.hf:load",
    "vllm": "selfreward.engines.vllm:load",
}
"""`engine.kind` -> the function that makes the engine (config, name_or_path) -> Engine."""

SCALES = {
    "additive_5pt": "selfreward.judging.additive_5pt:ADDITIVE_5PT",
    "rating_10pt": "selfreward.judging.rating_10pt:RATING_10PT",
}
"""`judge.scale` -> the `Scale` (selfreward.judging.scale)."""


def load(reference: str) -> Any:
    """The object a registry entry names (`module:attribute`), importing its module."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)
