"""A pointwise judgment scale: how a judgment states its score, where it stops, what EFT teaches.

The score is read from the generated judgment only (never from the prompt, which itself says
`Score: <total points>`): first the last line that is only `LABEL: N` (markdown emphasis allowed,
quotes not; method `text`), else the last `label N` with the label as a whole word (method
`text_lenient`). `N/D` and `N out of D` are rescaled to the scale, decimals are kept; a stated score
outside [lowest, highest] is invalid (value None), never clamped.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_NUMBER = r"(-?\d+(?:\.\d+)?)(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?"
_EMPHASIS = r"[*_]*"


@dataclass(frozen=True)
class TextScore:
    value: float | None
    """The score, or None when the stated score is out of the scale's range."""
    method: str
    """`text` (strict: the last line that is only `LABEL: N`) or `text_lenient`."""
    end: int
    """Offset just past the score statement in the judgment."""


@dataclass(frozen=True)
class Scale:
    """One judging scale: its prompt template, its score label and range."""

    name: str
    template: str
    """The template (selfreward/prompts/NAME.txt) that asks for a judgment on this scale."""
    label: str
    """The word a judgment states its score with (`Score` in `Score: 4`)."""
    lowest: int
    highest: int
    strict: re.Pattern[str] = field(init=False, repr=False)
    lenient: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        word = re.escape(self.label)
        strict = rf"^[ \t]*{_EMPHASIS}[ \t]*{word}[ \t]*{_EMPHASIS}[ \t]*:[ \t]*{_EMPHASIS}[ \t]*{_NUMBER}[ \t]*{_EMPHASIS}[ \t]*\.?[ \t]*$"
        lenient = rf"\b{word}\b[ \t]*(?:of|is|was|=|:)?[ \t]*[*_`\"']*[ \t]*[:=]?[ \t]*[*_`\"']*[ \t]*{_NUMBER}"
        object.__setattr__(self, "strict", re.compile(strict, re.IGNORECASE | re.MULTILINE))
        object.__setattr__(self, "lenient", re.compile(lenient, re.IGNORECASE))

    @property
    def points(self) -> list[int]:
        return list(range(self.lowest, self.highest + 1))

    @property
    def digits(self) -> list[str]:
        """The scores as the single tokens the digit fallback reads (a scale above 9 has none)."""
        return [str(p) for p in self.points] if self.highest <= 9 else []

    @property
    def stop(self) -> tuple[str, ...]:
        """Where a judgment stops: right after its `LABEL: N` line (text after it would be ignored)."""
        return tuple(f"{self.label}: {p}\n" for p in self.points)

    def target(self, score: int) -> str:
        """The line an EFT training judgment ends with."""
        return f"{self.label}: {score}"

    def read(self, judgment: str) -> TextScore | None:
        """The score a judgment states (strict rule, then lenient), or None when it states none."""
        for pattern, method in ((self.strict, "text"), (self.lenient, "text_lenient")):
            matches = list(pattern.finditer(judgment or ""))
            if matches:
                return TextScore(self._value(matches[-1]), method, matches[-1].end())
        return None

    def _value(self, match: re.Match[str]) -> float | None:
        value, out_of = match.groups()
        score = float(value)
        if out_of is not None:
            if float(out_of) <= 0:
                return None
            score = score * self.highest / float(out_of)
        return score if self.lowest <= score <= self.highest else None

    def parse(self, judgment: str) -> float | None:
        """The valid score a judgment states, or None (missing or out of range)."""
        found = self.read(judgment)
        return found.value if found else None

    def histogram(self, scores: list[float]) -> dict[str, int]:
        """Counts of scores rounded to the nearest point of the scale."""
        counts = Counter(round(s) for s in scores)
        return {str(p): counts.get(p, 0) for p in self.points}

    def top_share(self, scores: list[float]) -> float | None:
        """Share of scores at the top of the scale (a saturating judge gives every answer the top)."""
        return round(sum(1 for s in scores if round(s) == self.highest) / len(scores), 3) if scores else None
