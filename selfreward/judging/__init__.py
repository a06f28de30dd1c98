"""The judge: what a model is asked to judge and how its judgment is read (selfreward.judging.responses).

A scale is one file defining a `Scale` and one line in SCALES below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfreward.errors import SelfRewardError
from selfreward.judging.additive_5pt import ADDITIVE_5PT
from selfreward.judging.rating_10pt import RATING_10PT
from selfreward.judging.responses import PointJudgment
from selfreward.judging.scale import Scale

if TYPE_CHECKING:
    from selfreward.config import JudgeConfig

__all__ = ["ADDITIVE_5PT", "RATING_10PT", "SCALES", "Scale", "point_judgment", "scale_named"]

SCALES: dict[str, Scale] = {scale.name: scale for scale in (ADDITIVE_5PT, RATING_10PT)}
"""The judging scales by name (`judge.scale`)."""


def scale_named(name: str) -> Scale:
    if name not in SCALES:
        raise SelfRewardError(f"unknown judge scale {name!r} (scales: {', '.join(SCALES)})")
    return SCALES[name]


def point_judgment(config: JudgeConfig) -> PointJudgment:
    """What the text judge asks and how it reads it: `judge.scale`, `judge.template`, `judge.fallback`."""
    return PointJudgment.of(scale_named(config.scale), config.template, config.fallback)
