"""The records a stage reads, checked where it reads them: each line a JSON object with the fields
the stage uses, of the right types, scores finite and on their method's scale, ids unique.

A problem is one SelfRewardError naming the file, the line and the record's id. Judgments of a
candidate that is not in the candidates file are not an error: the stages leave them out and count
them (`judgments_without_candidate`).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from selfreward.display import quoted
from selfreward.errors import SelfRewardError
from selfreward.records import numbered_rows

FiniteNumber = Annotated[float, AllowInfNan(False)]
"""In strict mode: a JSON number within float range, not NaN or infinite (never a string or a bool)."""
SCALED_METHODS = ("text", "text_lenient", "digit_probs")
"""Judgment methods whose scores lie on the judge's scale (`implicit` rewards are any finite number)."""
SCALE = (0, 5)
"""The scale judgments are checked against unless the reader gives its own (`read_records(..., scale=)`)."""


class Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class PromptRecord(Record):
    id: StrictStr
    prompt: StrictStr


class CandidateRecord(Record):
    id: StrictStr
    prompt_id: StrictStr
    prompt: StrictStr
    text: StrictStr
    finished: StrictBool = True
    num_tokens: Annotated[StrictInt, Field(ge=0, le=2**31)] = 0
    """Optional; when given, a count (not null)."""


def _on_scale(value: float | None, what: str, scale: tuple[int, int]) -> None:
    if value is not None and not scale[0] <= value <= scale[1]:
        raise ValueError(f"{what} {value:g} is outside {scale[0]}-{scale[1]}")


class JudgmentRecord(Record):
    id: StrictStr
    candidate_id: StrictStr
    score: FiniteNumber | None
    method: Literal["text", "text_lenient", "digit_probs", "implicit"] | None
    prompt_id: StrictStr | None = None
    text: StrictStr | None = None
    text_score: FiniteNumber | None = None

    @model_validator(mode="after")
    def scores_fit_their_method(self, info: ValidationInfo) -> JudgmentRecord:
        scale = (info.context or {}).get("scale", SCALE)
        if (self.score is None) != (self.method is None):
            raise ValueError("a judgment has both a score and its method, or neither")
        if self.method in SCALED_METHODS:
            _on_scale(self.score, f"score for method {self.method}", scale)
        _on_scale(self.text_score, "text_score", scale)
        if self.text_score is not None and self.text is None:
            raise ValueError("text_score without the judgment's text")
        return self


class PairRecord(Record):
    prompt: StrictStr
    chosen: StrictStr
    rejected: StrictStr
    id: StrictStr | None = None
    kind: StrictStr | None = None


def _problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"missing field {field!r}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{field}: {message} (got {quoted(error['input'])})" if field else message


def read_records(path: Path, schema: type[Record], scale: tuple[int, int] = SCALE) -> list[dict[str, Any]]:
    """The rows of a stage's input file, each checked against `schema` (judgments' scores against
    `scale`, the judge scale's lowest and highest); ids must be unique."""
    rows: list[dict[str, Any]] = []
    lines: dict[str, int] = {}
    for number, row in numbered_rows(path):
        where = f"{path} line {number}" + (f" (id {quoted(row['id'])})" if isinstance(row.get("id"), str) else "")
        try:
            schema.model_validate(row, context={"scale": scale})
        except ValidationError as exc:
            raise SelfRewardError(f"{where}: {_problem(exc)}") from None
        if row.get("id") is not None:
            if row["id"] in lines:
                raise SelfRewardError(f"{where}: the id is used twice (first at line {lines[row['id']]})")
            lines[row["id"]] = number
        rows.append(row)
    return rows


def judgments_by_candidate(
    candidates: list[dict[str, Any]], judgments: list[dict[str, Any]], path: Path
) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The judgments of each candidate, and how many judgments name no candidate of the file
    (left out). A judgment naming another prompt than its candidate's, or a file mixing implicit
    rewards with written judgments, is an error naming `path`."""
    implicit = {j["method"] == "implicit" for j in judgments if j["method"] is not None}
    if len(implicit) > 1:
        mixed = "mixes implicit rewards with written judgments' 0-5 scores: they cannot be compared"
        raise SelfRewardError(f"{path} {mixed}")
    prompt_of = {c["id"]: c["prompt_id"] for c in candidates}
    by_candidate: dict[str, list[dict[str, Any]]] = defaultdict(list)
    orphans = 0
    for j in judgments:
        if j["candidate_id"] not in prompt_of:
            orphans += 1
            continue
        if j.get("prompt_id") not in (None, prompt_of[j["candidate_id"]]):
            raise SelfRewardError(
                f"{path}: judgment {quoted(j['id'])} names prompt {quoted(j['prompt_id'])}, "
                f"but its candidate {quoted(j['candidate_id'])} answers {quoted(prompt_of[j['candidate_id']])}"
            )
        by_candidate[j["candidate_id"]].append(j)
    return by_candidate, orphans
