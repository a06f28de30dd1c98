"""Seed data: IFT examples (prompt, best response) and human-ranked groups, from

- oasst1/oasst2 message rows (the `OpenAssistant/oasst1` schema) in JSONL/Parquet or from the hub,
- Open Assistant tree JSONL (nested `prompt` -> `replies`),
- plain JSONL: `{prompt, response}` or `{prompt, responses: [{text, rank}]}`
  (also `{question, answer, rank}` rows, one answer per row, grouped by question),
- chat rows `{messages: [{role: user, content}, {role: assistant, content}, ...]}` and alpaca rows
  `{instruction, input, output}` (IFT examples: one answer),
- `demo`: the package's own embedded data.

Each row's format is recognised on its own, so one source may mix them and a bad row spoils no
other. As in the paper: one language (English by default), first turn only, rank 0 as the IFT
answer. Malformed rows are skipped and counted; so are groups a use cannot take (an IFT prompt
without a rank-0 answer or seen before; a ranked group without a strict preference: a single
response, or all tied). A source with no usable rows is an error.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
    formats: Counter[str] = field(default_factory=Counter)
    """Rows per recognised format."""
    rows: int = 0
    skipped: int = 0
    first_bad: str | None = None
    groups: int = 0
    """Groups the caller uses (after `left_out`)."""
    left_out: Counter[str] = field(default_factory=Counter)
    """Groups read but not usable for the caller's purpose, by reason."""

    @property
    def format(self) -> str:
        return "+".join(self.formats) or "unknown"

    def bad(self, where: str, why: str) -> None:
        """Count a skipped row; `first_bad` is the earliest in the file (rows are checked in two passes)."""
        self.skipped += 1
        if self.first_bad is None or _position(where) < _position(self.first_bad):
            self.first_bad = f"{where}: {why}"

    def summary(self) -> str:
        text = f"{self.source} ({self.format}): {self.rows} rows, {self.groups} usable, {self.skipped} skipped"
        text += f" (first: {self.first_bad})" if self.first_bad else ""
        return text + (f"; left out: {_reasons(self.left_out)}" if self.left_out else "")


def _reasons(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in counts.items())


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


FORMAT_KEYS = (
    ("oasst-messages", ("message_id", "role")),
    ("ranked-jsonl", ("responses",)),
    ("oasst-tree", ("message_tree_id", "prompt")),
    ("question-answer", ("question", "answer")),
    ("ift-jsonl", ("prompt", "response")),
    ("chat-messages", ("messages",)),
    ("alpaca", ("instruction", "output")),
)
"""Each format and the keys that identify one of its rows, checked in this order."""


def _detect(row: dict[str, Any]) -> str:
    return next((name for name, keys in FORMAT_KEYS if all(k in row for k in keys)), "unknown")


def _groups_from_messages(
    rows: list[tuple[str, dict[str, Any]]], lang: str, report: LoadReport
) -> Iterator[RankedGroup]:
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
    if not isinstance(root, dict):
        raise BadRow("`prompt` is not a message tree")
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


def _one_answer(where: str, prompt: str, answer: str) -> RankedGroup:
    return RankedGroup(where, prompt, (RankedResponse(answer, 0.0),))


def _group_from_chat(where: str, row: dict[str, Any], lang: str) -> RankedGroup:
    """A chat row: its first user turn and the assistant's answer to it."""
    messages = row["messages"]
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRow("`messages` must be a list of {role, content} objects")
    roles = [m.get("role") for m in messages[:2]]
    if roles != ["user", "assistant"]:
        shown = ", ".join(quoted(r) for r in roles) or "none"
        raise BadRow(f"`messages` must start with a user turn and the assistant's answer (the first roles: {shown})")
    return _one_answer(where, _text(messages[0], "content"), _text(messages[1], "content"))


def _group_from_alpaca(where: str, row: dict[str, Any], lang: str) -> RankedGroup:
    """An alpaca row: the instruction, followed by its `input` when there is one, and the output."""
    instruction, extra = _text(row, "instruction"), row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise BadRow(f"`input` {quoted(extra)} is not text")
    prompt = f"{instruction}\n\n{_text(row, 'input')}" if extra and extra.strip() else instruction
    return _one_answer(where, prompt, _text(row, "output"))


def _group_from_ift_row(where: str, row: dict[str, Any], lang: str) -> RankedGroup:
    return _one_answer(where, _text(row, "prompt"), _text(row, "response"))


def _unrecognised(where: str, row: dict[str, Any], lang: str) -> RankedGroup:
    formats = ", ".join("{" + ", ".join(keys) + "}" for _, keys in FORMAT_KEYS)
    raise BadRow(f"unrecognised row (expected the keys of one of: {formats})")


def _group_from_ranked_row(where: str, row: dict[str, Any], lang: str) -> RankedGroup | None:
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


ROW_READERS: dict[str, Callable[[str, dict[str, Any], str], RankedGroup | None]] = {
    "oasst-tree": _group_from_tree,
    "ranked-jsonl": _group_from_ranked_row,
    "ift-jsonl": _group_from_ift_row,
    "chat-messages": _group_from_chat,
    "alpaca": _group_from_alpaca,
    "unknown": _unrecognised,
}
"""The formats whose every row is a group of its own (messages and question-answer rows are grouped)."""


def _question_groups(by_question: dict[str, list[RankedResponse]]) -> list[RankedGroup]:
    questions = enumerate(by_question.items())
    return [RankedGroup(f"q{i}", q, tuple(sorted(r, key=lambda x: x.rank))) for i, (q, r) in questions]


def _add_answer(by_question: dict[str, list[RankedResponse]], row: dict[str, Any]) -> None:
    rank = _rank(row.get("rank"))
    answer = RankedResponse(_text(row, "answer"), rank if rank is not None else 0.0)
    by_question[_text(row, "question")].append(answer)


def load_groups(source: str, lang: str = "en") -> tuple[list[RankedGroup], LoadReport]:
    """Every first-turn prompt of a source with its ranked responses (one response for IFT-only rows)."""
    if source == "demo":
        raise ValueError("resolve `demo` with load_ift/load_ranked")
    report = LoadReport(source)
    messages: list[tuple[str, dict[str, Any]]] = []
    by_question: dict[str, list[RankedResponse]] = defaultdict(list)
    groups: list[RankedGroup] = []
    for where, row in _iter_rows(source, report):
        kind = _detect(row)
        if kind != "unknown":
            report.formats[kind] += 1
        if kind == "oasst-messages":
            messages.append((where, row))  # checked and grouped below: replies name their parents
            continue
        try:
            if kind == "question-answer":
                _add_answer(by_question, row)
            elif (group := ROW_READERS[kind](where, row, lang)) is not None:
                groups.append(group)
        except BadRow as exc:
            report.bad(where, str(exc))
    groups += [*_groups_from_messages(messages, lang, report), *_question_groups(by_question)]
    report.groups = len(groups)
    if not groups:
        raise SelfRewardError(_no_rows_message(report))
    return groups, report


def _no_rows_message(report: LoadReport) -> str:
    detail = f"; first problem at {report.first_bad}" if report.first_bad else ""
    return f"no usable rows in {report.source} ({report.rows} rows read, {report.skipped} skipped{detail})"


def _load(
    sources: list[str], kind: str, lang: str, usable: Callable[[RankedGroup], str | None]
) -> tuple[list[RankedGroup], list[LoadReport]]:
    """The groups of every source that `usable` accepts (it returns why not, or None); the others
    are counted in their report's `left_out`, and `groups` counts the usable ones."""
    groups, reports = [], []
    for source in sources:
        found, report = load_groups(str(DEMO_FILES[kind]) if source == "demo" else source, lang)
        if source == "demo":
            report.source = f"demo ({kind})"
        kept = []
        for group in found:
            reason = usable(group)
            if reason is None:
                kept.append(group)
            else:
                report.left_out[reason] += 1
        report.groups = len(kept)
        groups.extend(kept)
        reports.append(report)
    return groups, reports


def load_ift(
    sources: list[str], lang: str = "en", limit: int | None = None
) -> tuple[list[IFTExample], list[LoadReport]]:
    """(prompt, best response) pairs: the rank-0 answer of every group, deduplicated by prompt."""
    seen: set[str] = set()

    def usable(group: RankedGroup) -> str | None:
        if group.responses[0].rank != 0:
            return "without a rank-0 answer"
        if group.prompt in seen:
            return "repeating an earlier prompt"
        seen.add(group.prompt)
        return None

    groups, reports = _load(sources, "ift", lang, usable)
    examples = [IFTExample(g.prompt, g.responses[0].text) for g in groups]
    return examples[:limit] if limit else examples, reports


def preference_problem(group: RankedGroup) -> str | None:
    """Why a ranked group states no preference between its responses (None: it does)."""
    if len(group.responses) < 2:
        return "with a single ranked response"
    if len({r.rank for r in group.responses}) == 1:
        return "whose responses all tie"
    return None


def load_ranked(sources: list[str], lang: str = "en") -> tuple[list[RankedGroup], list[LoadReport]]:
    """Groups with a strict preference: two or more ranked responses, not all of the same rank."""
    groups, reports = _load(sources, "ranked", lang, preference_problem)
    if not groups:
        left_out = sum((r.left_out for r in reports), Counter())
        detail = f" (left out: {_reasons(left_out)})" if left_out else ""
        none = "no prompt with two or more ranked responses of different ranks"
        raise SelfRewardError(f"{none} in {', '.join(sources)}{detail}")
    return groups, reports
