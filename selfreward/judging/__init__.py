"""The judge: what a model is asked to judge and how its judgment is read (selfreward.judging.responses).

A scale is one file defining a `Scale` and one line in selfreward.registry.SCALES.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfreward.errors import SelfRewardError
from selfreward.judging.responses import PointJudgment
from selfreward.judging.scale import Scale
from selfreward.registry import SCALES, load

if TYPE_CHECKING:
    from selfreward.config import JudgeConfig

__all__ = ["Scale", "point_judgment", "scale_named"]


def scale_named(name: str) -> Scale:
    """The scale registered under `name` (`judge.scale`)."""
    if name not in SCALES:
        raise SelfRewardError(f"unknown judge scale {name!r} (scales: {', '.join(SCALES)})")
    scale: Scale = load(SCALES[name])
    return scale


def point_judgment(config: JudgeConfig) -> PointJudgment:
    """What the text judge asks and how it reads it: `judge.scale`, `judge.template`, `judge.fallback`."""
    return PointJudgment.of(scale_named(config.scale), config.template, config.fallback)
