"""Seed data: IFT examples (prompt, best response) and human-ranked groups, from

- oasst1/oasst2 message rows (the `OpenAssistant/oasst1` schema) in JSONL/Parquet or from the hub,
- Open Assistant tree JSONL (nested `prompt` -> `replies`),
- plain JSONL: `{prompt, response}` or `{prompt, responses: [{text, rank}]}`
  (also `{question, answer, rank}` rows, one answer per row, grouped by question),
- `demo`: the package's own embedded data.

As in the paper: one language (English by default), first turn only, rank 0 as the IFT answer.
Malformed rows are skipped and counted; a source with no usable rows is an error.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfreward.display import quoted
from selfreward.errors import SelfRewardError

DEMO_DIR = Path(__file__).parent / "data"
DEMO_FILES = {"ift": DEMO_DIR / "demo_ift.jsonl", "ranked": DEMO_DIR / "demo_ranked.jsonl"}


@dataclass(frozen=True)
class IFTExample:
    prompt: str
    response: str


@dataclass(frozen=True)
class RankedResponse:
    text: str
    rank: float
    """0 = best, as in oasst."""
    quality: float | None = None
    """oasst's crowd `quality` label in [0, 1], when the source has it."""


@dataclass(frozen=True)
class RankedGroup:
    group_id: str
    prompt: str
    responses: tuple[RankedResponse, ...]
    """Sorted best first."""


@dataclass
class LoadReport:
    source: str
    format: str = "unknown"
    rows: int = 0
    skipped: int = 0
    first_bad: str | None = None
    groups: int = 0

    def bad(self, where: str, why: str) -> None:
        """Count a skipped row; `first_bad` is the earliest in the file (rows are checked in two passes)."""
        self.skipped += 1
        if self.first_bad is None or _position(where) < _position(self.first_bad):
            self.first_bad = f"{where}: {why}"

    def summary(self) -> str:
        text = f"{self.source} ({self.format}): {self.rows} rows, {self.groups} usable, {self.skipped} skipped"
        return text + (f" (first: {self.first_bad})" if self.first_bad else "")


def _position(where: str) -> int:
    """The number in a row location (`line 12`, `row 3`)."""
    match = re.search(r"\d+", where)
    return int(match.group()) if match else 0


class BadRow(ValueError):
    pass


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRow(f"missing or empty {key!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRow(f"{key!r} is not valid Unicode (lone surrogate)") from None
    return value.strip()


def _finite(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (bools, NaN, infinities, huge integers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _rank(value: Any) -> float | None:
    if value is None:
        return None
    rank = _finite(value)
    if rank is None:
        raise BadRow(f"rank {quoted(value)} is not a finite number")
    return rank


def _quality(labels: Any) -> float | None:
    """oasst `labels` ({name: [...], value: [...]} or {name: value}) -> the `quality` value."""
    if not isinstance(labels, dict):
        return None
    names, values = labels.get("name"), labels.get("value")
    if isinstance(names, list) and isinstance(values, list) and "quality" in names:
        index = names.index("quality")
        return _finite(values[index]) if index < len(values) else None
    value = labels.get("quality")
    return _finite(value.get("value") if isinstance(value, dict) else value)


def _group_id(where: str, *candidates: Any) -> str:
    """The first candidate that is a usable id (a non-empty string or an integer), else the row's location."""
    for value in candidates:
        if (isinstance(value, str) and value) or (isinstance(value, int) and not isinstance(value, bool)):
            return str(value)
    return where


def _iter_rows(source: str, report: LoadReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, row) for each JSON object of a JSONL/Parquet file or hub dataset."""
    path = Path(source).expanduser()
    if path.suffix == ".parquet":
        if not path.is_file():
            raise SelfRewardError(f"data file not found: {source}")
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise SelfRewardError(f"cannot read {source} as Parquet: {str(exc).splitlines()[0]}") from None
        for number, row in enumerate(table.to_pylist(), 1):
            report.rows += 1
            yield f"row {number}", row
        return
    if path.suffix in {".jsonl", ".json"} or path.exists():
        if not path.is_file():
            raise SelfRewardError(f"data file not found: {source}")
        yield from _jsonl_rows(path, report)
        return
    if source.count("/") == 1 and not source.startswith((".", "/")):
        name, _, split = source.partition(":")
        try:
            from datasets import load_dataset

            dataset = load_dataset(name, split=split or "train")
        except Exception as exc:  # noqa: BLE001 - any hub/network failure becomes one line
            raise SelfRewardError(f"cannot load dataset {name!r} from the hub: {str(exc).splitlines()[0]}") from None
        for number, row in enumerate(dataset, 1):
            report.rows += 1
            yield f"row {number}", dict(row)
        return
    raise SelfRewardError(f"data file not found: {source}")


def _jsonl_rows(path: Path, report: LoadReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """The JSON objects of a JSONL file; lines that are not UTF-8 JSON objects are counted as bad."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the `with` below; opened apart so only open() errors are caught
    except OSError as exc:
        raise SelfRewardError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            report.rows += 1
            try:
                row = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError:
                report.bad(f"line {number}", "not valid UTF-8")
                continue
            except (ValueError, RecursionError) as exc:  # also over-long integers and too deep nesting
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc).split(":")[0]
                report.bad(f"line {number}", f"not valid JSON ({why})")
                continue
            if not isinstance(row, dict):
                report.bad(f"line {number}", "not a JSON object")
                continue
            yield f"line {number}", row


def _detect(row: dict[str, Any]) -> str:
    if "message_id" in row and "role" in row:
        return "oasst-messages"
    if isinstance(row.get("prompt"), dict) and "message_tree_id" in row:
        return "oasst-tree"
    if "responses" in row:
        return "ranked-jsonl"
    if "question" in row and "answer" in row:
        return "question-answer"
    if "prompt" in row and "response" in row:
        return "ift-jsonl"
    return "unknown"


def _groups_from_messages(rows: list[tuple[str, dict[str, Any]]], lang: str, report: LoadReport) -> Iterator[RankedGroup]:
    roots: dict[str, str] = {}
    replies: dict[str, list[RankedResponse]] = defaultdict(list)
    for where, row in rows:
        try:
            message_id, role, text = _text(row, "message_id"), _text(row, "role"), _text(row, "text")
            if role not in {"prompter", "assistant"}:
                raise BadRow(f"unknown role {quoted(role)}")
            rank = _rank(row.get("rank"))
        except BadRow as exc:
            report.bad(where, str(exc))
            continue
        if row.get("lang", lang) != lang or row.get("deleted"):
            continue
        parent = row.get("parent_id")
        if role == "prompter" and parent is None:
            roots[message_id] = text
        elif role == "assistant" and rank is not None and isinstance(parent, str):
            replies[parent].append(RankedResponse(text, rank, _quality(row.get("labels"))))
    for root_id, prompt in roots.items():
        if replies.get(root_id):
            yield RankedGroup(root_id, prompt, tuple(sorted(replies[root_id], key=lambda r: r.rank)))


def _group_from_tree(where: str, row: dict[str, Any], lang: str) -> RankedGroup | None:
    root = row["prompt"]
    prompt = _text(root, "text")
    if root.get("lang", lang) != lang:
        return None
    children = root.get("replies") or []
    if not isinstance(children, list):
        raise BadRow("`replies` is not a list")
    responses = []
    for child in children:
        if not isinstance(child, dict) or child.get("role", "assistant") != "assistant":
            continue
        rank = _rank(child.get("rank"))
        if rank is None or child.get("lang", lang) != lang or child.get("deleted"):
            continue
        responses.append(RankedResponse(_text(child, "text"), rank, _quality(child.get("labels"))))
    if not responses:
        return None
    group_id = _group_id(where, row.get("message_tree_id"), root.get("message_id"))
    return RankedGroup(group_id, prompt, tuple(sorted(responses, key=lambda r: r.rank)))


def _group_from_ranked_row(where: str, row: dict[str, Any]) -> RankedGroup | None:
    if row.get("first_turn") is False:
        return None
    prompt = _text(row, "prompt")
    items = row.get("responses")
    if not isinstance(items, list) or not items:
        raise BadRow("`responses` must be a non-empty list")
    responses = []
    for item in items:
        if not isinstance(item, dict):
            raise BadRow("each response must be an object with `text` and `rank`")
        rank = _rank(item.get("rank"))
        if rank is None:
            raise BadRow("a response has no `rank`")
        responses.append(RankedResponse(_text(item, "text"), rank, _quality(item.get("labels", item.get("quality")))))
    group_id = _group_id(where, row.get("prompt_message_id"), row.get("id"))
    return RankedGroup(group_id, prompt, tuple(sorted(responses, key=lambda r: r.rank)))


def load_groups(source: str, lang: str = "en") -> tuple[list[RankedGroup], LoadReport]:
    """Every first-turn prompt of a source with its ranked responses (one response for IFT-only rows)."""
    if source == "demo":
        raise ValueError("resolve `demo` with load_ift/load_ranked")
    report = LoadReport(source)
    rows = list(_iter_rows(source, report))
    if not rows:
        raise SelfRewardError(_no_rows_message(report))
    report.format = _detect(rows[0][1])
    groups: list[RankedGroup] = []
    if report.format == "oasst-messages":
        groups = list(_groups_from_messages(rows, lang, report))
    elif report.format == "question-answer":
        by_question: dict[str, list[RankedResponse]] = defaultdict(list)
        for where, row in rows:
            try:
                rank = _rank(row.get("rank"))
                by_question[_text(row, "question")].append(RankedResponse(_text(row, "answer"), rank if rank is not None else 0.0))
            except BadRow as exc:
                report.bad(where, str(exc))
        groups = [RankedGroup(f"q{i}", q, tuple(sorted(r, key=lambda x: x.rank))) for i, (q, r) in enumerate(by_question.items())]
    else:
        for where, row in rows:
            try:
                if report.format == "oasst-tree":
                    group = _group_from_tree(where, row, lang) if isinstance(row.get("prompt"), dict) else None
                    if group is None and not isinstance(row.get("prompt"), dict):
                        raise BadRow("`prompt` is not a message tree")
                elif report.format == "ranked-jsonl":
                    group = _group_from_ranked_row(where, row)
                elif report.format == "ift-jsonl":
                    group = RankedGroup(where, _text(row, "prompt"), (RankedResponse(_text(row, "response"), 0.0),))
                else:
                    raise BadRow("unrecognised row (expected oasst messages or trees, {prompt, response} or {prompt, responses})")
            except BadRow as exc:
                report.bad(where, str(exc))
                continue
            if group is not None:
                groups.append(group)
    report.groups = len(groups)
    if not groups:
        raise SelfRewardError(_no_rows_message(report))
    return groups, report


def _no_rows_message(report: LoadReport) -> str:
    detail = f"; first problem at {report.first_bad}" if report.first_bad else ""
    return f"no usable rows in {report.source} ({report.rows} rows read, {report.skipped} skipped{detail})"


def _load(sources: list[str], kind: str, lang: str) -> tuple[list[RankedGroup], list[LoadReport]]:
    groups, reports = [], []
    for source in sources:
        found, report = load_groups(str(DEMO_FILES[kind]) if source == "demo" else source, lang)
        if source == "demo":
            report.source = f"demo ({kind})"
        groups.extend(found)
        reports.append(report)
    return groups, reports


def load_ift(sources: list[str], lang: str = "en", limit: int | None = None) -> tuple[list[IFTExample], list[LoadReport]]:
    """(prompt, best response) pairs: the rank-0 answer of every group, deduplicated by prompt."""
    groups, reports = _load(sources, "ift", lang)
    seen, examples = set(), []
    for group in groups:
        best = group.responses[0]
        if best.rank == 0 and group.prompt not in seen:
            seen.add(group.prompt)
            examples.append(IFTExample(group.prompt, best.text))
    return examples[:limit] if limit else examples, reports


def load_ranked(sources: list[str], lang: str = "en") -> tuple[list[RankedGroup], list[LoadReport]]:
    """Groups with at least two ranked responses."""
    groups, reports = _load(sources, "ranked", lang)
    kept = [g for g in groups if len(g.responses) >= 2]
    if not kept:
        raise SelfRewardError(f"no prompt with two or more ranked responses in {', '.join(sources)}")
    return kept, reports
