"""Figures with 95% bootstrap confidence intervals (scipy.stats.bootstrap, percentile method, seeded).

Every figure that says whether a model changed is reported as an `Estimate`: the value, the 95%
interval, and how many items (prompts, pairs, groups) it rests on. A change is measurable when
its interval excludes zero (`verdict`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

RESAMPLES = 2000
CONFIDENCE = 0.95
NO_CHANGE = "no measurable change"

Estimate = dict[str, Any]
"""`{"value", "low", "high", "n"}`; low/high are None when fewer than 2 items or every resample agrees."""


def _interval(
    statistic: Callable[..., Any], samples: tuple[np.ndarray, ...], seed: int
) -> tuple[float | None, float | None]:
    if len(samples[0]) < 2:
        return None, None
    result = sps.bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return (round(low, 4), round(high, 4)) if np.isfinite(low) and np.isfinite(high) else (None, None)


def estimate(value: float | None, interval: tuple[float | None, float | None], n: int) -> Estimate:
    return {"value": None if value is None else round(float(value), 4), "low": interval[0], "high": interval[1], "n": n}


def mean_ci(values: Sequence[float], seed: int = 0) -> Estimate:
    """The mean of `values` with its interval."""
    data = np.asarray(values, dtype=float)
    if not len(data):
        return estimate(None, (None, None), 0)
    return estimate(data.mean(), _interval(lambda x, axis: x.mean(axis=axis), (data,), seed), len(data))


def ratio_ci(numerators: Sequence[float], denominators: Sequence[float], seed: int = 0) -> Estimate:
    """sum(numerators) / sum(denominators), resampling the items (e.g. instructions followed of
    instructions given, per prompt: instruction-level accuracy with prompts as the unit)."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if not len(num) or den.sum() == 0:
        return estimate(None, (None, None), len(num))
    interval = _interval(lambda a, b, axis: a.sum(axis=axis) / np.maximum(b.sum(axis=axis), 1e-12), (num, den), seed)
    return estimate(num.sum() / den.sum(), interval, len(num))


def paired_difference_ci(
    after: Sequence[float], before: Sequence[float], denominators: Sequence[float] | None = None, seed: int = 0
) -> Estimate:
    """after - before on the same items, resampled together: mean(after) - mean(before), or with
    `denominators` (sum(after) - sum(before)) / sum(denominators)."""
    a, b = np.asarray(after, dtype=float), np.asarray(before, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length ({len(a)} vs {len(b)})")
    if not len(a):
        return estimate(None, (None, None), 0)
    d = np.ones_like(a) if denominators is None else np.asarray(denominators, dtype=float)

    def statistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
        return (x.sum(axis=axis) - y.sum(axis=axis)) / np.maximum(w.sum(axis=axis), 1e-12)

    return estimate((a.sum() - b.sum()) / d.sum(), _interval(statistic, (a, b, d), seed), len(a))


def verdict(change: Estimate) -> str:
    """`higher` / `lower` when the interval of a change excludes 0, else NO_CHANGE."""
    low, high = change.get("low"), change.get("high")
    if low is not None and low > 0:
        return "higher"
    if high is not None and high < 0:
        return "lower"
    return NO_CHANGE


def describe(e: Estimate, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    """`13.9 [10.2, 17.6]`: the value and its interval times `scale` (`+` on changes), `-` when missing."""
    if e.get("value") is None:
        return "-"
    form = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = form.format(scale * e["value"])
    if e.get("low") is not None and e.get("high") is not None:
        text += f" [{form.format(scale * e['low'])}, {form.format(scale * e['high'])}]"
    return text
