"""Hostile stage inputs: every stage command given damaged, mistyped, off-scale, duplicated or orphaned
records. The harness (`run_stage`) asserts for each case: exit 0 with what was left out counted, or
exit 2 with one line naming the file; never a traceback; no file outside --out changed, no input
inside it changed, no NaN or Infinity in any JSON written; the model is never loaded for a refusal."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfreward.config import load_config
from selfreward.errors import SelfRewardError
from selfreward.records import write_json
from selfreward.stages.dpo import TrainDPO
from selfreward.steps import run_step

INPUTS = ("prompts", "candidates", "judgments", "pairs")
OUTPUT_OF = {"candidates": "candidates", "judge": "judgments", "pairs": "pairs", "meta": "meta"}
"""The files a stage command writes (the valid files of that name are left out of its inputs)."""
Files = dict[str, list[str]]


def valid_files() -> Files:
    """Three prompts, two candidates each, two judgments per candidate, the pairs they give: as JSONL lines."""
    prompts = [{"id": f"p{i}", "prompt": f"Question {i}?"} for i in range(3)]
    candidates = [
        {
            "id": f"p{i}-c{j}",
            "prompt_id": f"p{i}",
            "prompt": f"Question {i}?",
            "text": f"Answer {i}.{j}",
            "num_tokens": 3 + j,
            "finished": True,
        }
        for i in range(3)
        for j in range(2)
    ]
    judgments = [
        {
            "id": f"{c['id']}-j{k}",
            "candidate_id": c["id"],
            "prompt_id": c["prompt_id"],
            "text": f"Judged {k}.\nScore: {s}",
            "text_score": s,
            "score": s,
            "method": "text",
        }
        for c in candidates
        for k, s in enumerate((4, 5) if c["id"].endswith("c0") else (1, 2))
    ]
    pairs = [
        {
            "id": f"p{i}",
            "prompt": f"Question {i}?",
            "chosen": f"Answer {i}.0",
            "rejected": f"Answer {i}.1",
            "margin": 2.5,
        }
        for i in range(3)
    ]
    return {
        name: [json.dumps(r) for r in rows]
        for name, rows in zip(INPUTS, (prompts, candidates, judgments, pairs), strict=True)
    }


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} written into JSON")

    return json.loads(text, parse_constant=refuse)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Outcome:
    exit_code: int
    error: str
    stats: dict[str, Any]
    out: Path


def run_stage(root: Path, command: str, files: Files, *overrides: str) -> Outcome:
    """Write `files` into ROOT/out, run `selfreward COMMAND --out ROOT/out`, check the harness's rules."""
    out = root / "out"
    out.mkdir(parents=True)
    output = OUTPUT_OF[command]
    for name, lines in files.items():
        if name == output:
            continue
        (out / f"{name}.jsonl").write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8", errors="surrogateescape"
        )
        write_json(out / f"{name}.stats.json", {"stage": name})
    outside = root / "elsewhere.txt"
    outside.write_text("must not change\n")
    before = tree(root)
    result = invoke(command, "--out", out, *(a for o in overrides for a in ("--set", o)))
    assert "Traceback" not in result.output, result.output
    after = tree(root)
    assert {
        name: data for name, data in after.items() if name in before
    } == before  # inputs and files outside --out unchanged
    for name in set(after) - set(before):
        if name.endswith((".json", ".jsonl")):
            for line in after[name].decode().splitlines() if name.endswith(".jsonl") else [after[name].decode()]:
                strict_json(line)
    lines = result.stderr.strip().splitlines()
    if result.exit_code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return Outcome(2, lines[0], {}, out)
    assert result.exit_code == 0, result.output
    return Outcome(0, "", json.loads((out / f"{output}.stats.json").read_text()), out)


def replace(name: str, index: int, **changes: Any) -> Callable[[Files], None]:
    """An edit setting fields of row `index` of NAME (a value of `...` deletes the field)."""

    def edit(files: Files) -> None:
        row = json.loads(files[name][index])
        for key, value in changes.items():
            if value is ...:
                del row[key]
            else:
                row[key] = value
        files[name][index] = json.dumps(row)

    return edit


def set_line(name: str, index: int, line: str) -> Callable[[Files], None]:
    def edit(files: Files) -> None:
        files[name][index] = line

    return edit


def append_copy(name: str, index: int, **changes: Any) -> Callable[[Files], None]:
    def edit(files: Files) -> None:
        files[name].append(files[name][index])
        replace(name, len(files[name]) - 1, **changes)(files)

    return edit


def scores(name: str, first: Any, second: Any, method: str = "text") -> Callable[[Files], None]:
    """Both judgments of p0-c0 set to `first` and both of p0-c1 to `second`; every judgment's method
    set to `method` (text_score dropped)."""

    def edit(files: Files) -> None:
        for index in range(len(files[name])):
            score = {0: first, 1: first, 2: second, 3: second}.get(index, json.loads(files[name][index])["score"])
            replace(name, index, score=score, method=method, text_score=None)(files)

    return edit


@dataclass(frozen=True)
class Case:
    name: str
    command: str
    edit: Callable[[Files], None]
    expect: str
    """`stat <key>=<value>` of the stage's stats after exit 0, else text of the one-line error (exit 2)."""


CASES = [
    Case(
        "judgments cut mid-line",
        "pairs",
        lambda f: f["judgments"].__setitem__(-1, f["judgments"][-1][:25]),
        "error: judgments.jsonl line 12: not valid JSON",
    ),
    Case(
        "candidate without prompt_id",
        "pairs",
        replace("candidates", 2, prompt_id=...),
        "error: candidates.jsonl line 3 (id 'p1-c0'): missing field 'prompt_id'",
    ),
    Case(
        "score given as the string 5",
        "pairs",
        replace("judgments", 0, score="5"),
        "error: judgments.jsonl line 1 (id 'p0-c0-j0'): score: Input should be a valid number (got '5')",
    ),
    Case("scores 7 and -3", "pairs", scores("judgments", 7, -3), "score for method text 7 is outside 0-5"),
    Case(
        "scores +-1e308 as text",
        "pairs",
        scores("judgments", 1e308, -1e308),
        "score for method text 1e+308 is outside 0-5",
    ),
    Case(
        "implicit rewards +-1e308",
        "pairs",
        scores("judgments", 1e308, -1e308, "implicit"),
        "stat dropped.margin_beyond_float_range=1",
    ),
    Case("implicit reward 12.5 and -40", "pairs", scores("judgments", 12.5, -40.0, "implicit"), "stat pairs=3"),
    Case(
        "NaN score",
        "pairs",
        set_line(
            "judgments",
            0,
            json.dumps({"id": "p0-c0-j0", "candidate_id": "p0-c0", "score": math.nan, "method": "text"}),
        ),
        "error: judgments.jsonl line 1 (id 'p0-c0-j0'): score: Input should be a finite number",
    ),
    Case(
        "Infinity score",
        "pairs",
        set_line("judgments", 0, '{"id": "x", "candidate_id": "p0-c0", "score": -Infinity, "method": "implicit"}'),
        "score: Input should be a finite number",
    ),
    Case(
        "1e400 score",
        "pairs",
        set_line("judgments", 0, '{"id": "x", "candidate_id": "p0-c0", "score": 1e400, "method": "implicit"}'),
        "score: Input should be a finite number",
    ),
    Case(
        "boolean score",
        "pairs",
        replace("judgments", 3, score=True),
        "error: judgments.jsonl line 4 (id 'p0-c1-j1'): score: Input should be a valid number (got True)",
    ),
    Case(
        "unknown method",
        "pairs",
        replace("judgments", 0, method="vibes"),
        "method: Input should be 'text', 'text_lenient', 'digit_probs' or 'implicit' (got 'vibes')",
    ),
    Case(
        "score without a method",
        "pairs",
        replace("judgments", 0, method=None),
        "a judgment has both a score and its method, or neither",
    ),
    Case(
        "judgment without score field",
        "pairs",
        replace("judgments", 5, score=...),
        "error: judgments.jsonl line 6 (id 'p1-c0-j1'): missing field 'score'",
    ),
    Case(
        "duplicate candidate ids",
        "pairs",
        append_copy("candidates", 0, text="Another answer"),
        "error: candidates.jsonl line 7 (id 'p0-c0'): the id is used twice (first at line 1)",
    ),
    Case(
        "duplicate judgment ids",
        "pairs",
        append_copy("judgments", 2, score=0),
        "error: judgments.jsonl line 13 (id 'p0-c1-j0'): the id is used twice (first at line 3)",
    ),
    Case(
        "judgments of missing candidates",
        "pairs",
        append_copy("judgments", 0, id="ghost-j0", candidate_id="ghost", prompt_id="p0"),
        "stat judgments_without_candidate=1",
    ),
    Case(
        "implicit rewards mixed with 0-5 scores",
        "pairs",
        replace("judgments", 0, score=0.25, method="implicit", text_score=None),
        "judgments.jsonl mixes implicit rewards with written judgments' 0-5 scores",
    ),
    Case(
        "candidate num_tokens null",
        "pairs",
        replace("candidates", 1, num_tokens=None),
        "error: candidates.jsonl line 2 (id 'p0-c1'): num_tokens: Input should be a valid integer (got None)",
    ),
    Case(
        "judgment naming another prompt",
        "pairs",
        replace("judgments", 0, prompt_id="p2"),
        "judgment 'p0-c0-j0' names prompt 'p2', but its candidate 'p0-c0' answers 'p0'",
    ),
    Case(
        "candidates file not UTF-8",
        "pairs",
        set_line("candidates", 1, '{"id": "p0-c1", "text": "caf\udce9"}'),
        "candidates.jsonl: not UTF-8 text (byte ",
    ),
    Case(
        "a line that is a JSON list",
        "pairs",
        set_line("judgments", 4, "[1, 2]"),
        "error: judgments.jsonl line 5: not a JSON object",
    ),
    Case(
        "a line nested 100000 deep",
        "pairs",
        set_line("judgments", 4, "[" * 100_000),
        "error: judgments.jsonl line 5: not valid JSON",
    ),
    Case(
        "finished given as a string",
        "pairs",
        replace("candidates", 0, finished="yes"),
        "finished: Input should be a valid boolean (got 'yes')",
    ),
    Case(
        "num_tokens beyond any answer",
        "pairs",
        replace("candidates", 0, num_tokens=10**400),
        "num_tokens: Input should be less than or equal to 2147483648",
    ),
    Case("blank lines between rows", "pairs", lambda f: f["judgments"].insert(3, "   "), "stat pairs=3"),
    Case("no judgments at all", "pairs", lambda f: f["judgments"].clear(), "stat unscored_candidates=6"),
    Case(
        "text_score without its text",
        "meta",
        replace("judgments", 1, text=...),
        "error: judgments.jsonl line 2 (id 'p0-c0-j1'): text_score without the judgment's text",
    ),
    Case("text_score off the scale", "meta", replace("judgments", 1, text_score=6), "text_score 6 is outside 0-5"),
    Case(
        "pair without chosen",
        "meta",
        replace("pairs", 1, chosen=...),
        "error: pairs.jsonl line 2 (id 'p1'): missing field 'chosen'",
    ),
    Case(
        "duplicate pair ids",
        "meta",
        append_copy("pairs", 0),
        "error: pairs.jsonl line 4 (id 'p0'): the id is used twice (first at line 1)",
    ),
    Case(
        "prompt that is not text",
        "candidates",
        replace("prompts", 1, prompt=["Question 1?"]),
        "error: prompts.jsonl line 2 (id 'p1'): prompt: Input should be a valid string",
    ),
    Case(
        "duplicate prompt ids",
        "candidates",
        append_copy("prompts", 2),
        "error: prompts.jsonl line 4 (id 'p2'): the id is used twice (first at line 3)",
    ),
    Case(
        "prompt id a number",
        "candidates",
        replace("prompts", 0, id=7),
        "error: prompts.jsonl line 1: id: Input should be a valid string (got 7)",
    ),
    Case(
        "candidate text missing",
        "judge",
        replace("candidates", 4, text=...),
        "error: candidates.jsonl line 5 (id 'p2-c0'): missing field 'text'",
    ),
    Case(
        "candidates cut, implicit judge",
        "judge",
        lambda f: f["candidates"].__setitem__(5, f["candidates"][5][:-3]),
        "error: candidates.jsonl line 6: not valid JSON",
    ),
]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Refusals must come before any model is loaded."""

    def refuse(config, name_or_path):
        raise AssertionError(f"a model was loaded ({name_or_path})")

    monkeypatch.setattr("selfreward.steps.make_engine", refuse)
    monkeypatch.setattr("selfreward.stages.implicit_judge.score_with_model", refuse)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_stage_input(case, tiny_model, tmp_path, no_model_loads):
    files = valid_files()
    case.edit(files)
    overrides = [f"model.name_or_path={tiny_model}"] + (
        ["judge.kind=implicit", f"judge.reference={tiny_model}"] if "implicit judge" in case.name else []
    )
    outcome = run_stage(tmp_path, case.command, files, *overrides)
    if not case.expect.startswith("stat "):
        assert outcome.exit_code == 2 and case.expect.removeprefix("error: ") in outcome.error
        assert str(tmp_path / "out") in outcome.error  # the line names the file
    else:
        key, value = case.expect.removeprefix("stat ").split("=")
        found: Any = outcome.stats
        for part in key.split("."):
            found = found[part]
        assert outcome.exit_code == 0 and str(found) == value


def test_the_valid_files_make_three_pairs(tmp_path):
    outcome = run_stage(tmp_path, "pairs", valid_files())
    assert (outcome.exit_code, outcome.stats["pairs"], outcome.stats["judgments_without_candidate"]) == (0, 3, 0)


def test_dpo_refuses_a_damaged_pairs_file_before_loading_anything(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "p0", "prompt": "q", "chosen": "a", "rejected": 3}) + "\n")
    config = load_config("demo")
    with pytest.raises(
        SelfRewardError, match=rf"^{pairs} line 1 \(id 'p0'\): rejected: Input should be a valid string \(got 3\)$"
    ):
        run_step(
            TrainDPO("dpo1", config.model, config.dpo, "unused", None, pairs, tmp_path / "dpo1", tmp_path / "M2", 0)
        )
    assert not (tmp_path / "dpo1").exists()


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.sampled_from([math.nan, math.inf, -1e308, 1e308, 5.5, -0.0, 10**30]),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
FIELDS = {
    "candidates": ["id", "prompt_id", "prompt", "text", "finished", "num_tokens"],
    "judgments": ["id", "candidate_id", "prompt_id", "score", "method", "text", "text_score"],
}


ACTIONS = ["cut", "drop", "copy", "junk", "method", "score", "orphan", "blank"]
"""Damage, and changes a stage must take in its stride: a valid score, a judgment of no candidate, a blank line."""


@st.composite
def damage(draw) -> list[tuple[str, int, str, Any]]:
    """A few edits (file, row, action, value): a field set to `value`, or an action: `cut` the line in
    half, `drop` the field `value`, `copy` the line to the end, replace it by `junk`, set the `method`,
    a valid `score`, make the row an `orphan` (a judgment of no candidate), add a `blank` line."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(FIELDS)))
        action = draw(st.sampled_from([*FIELDS[name], *ACTIONS]))
        values = {
            "drop": st.sampled_from(FIELDS[name]),
            "method": st.sampled_from(["text", "text_lenient", "digit_probs", "implicit", None]),
            "score": st.floats(0, 5),
        }
        edits.append((name, draw(st.integers(0, 5)), action, draw(values.get(action, JSON_VALUES))))
    return edits


def as_object(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def apply(files: Files, edits: list[tuple[str, int, str, Any]]) -> None:
    """Apply `damage`'s edits in order; a field edit of a line an earlier edit spoilt is passed over."""
    for name, index, action, value in edits:
        line, row = files[name][index], as_object(files[name][index])
        if action == "cut":
            files[name][index] = line[: len(line) // 2]
        elif action == "copy":
            files[name].append(line)
        elif action == "junk":
            files[name][index] = value.replace("\n", " ") if isinstance(value, str) else json.dumps(value)
        elif action == "blank":
            files[name].insert(index, " ")
        elif row is not None and action == "drop":
            row.pop(value, None)
            files[name][index] = json.dumps(row)
        elif row is not None and action == "orphan":
            files[name][index] = json.dumps(row | {"candidate_id": f"ghost{index}", "prompt_id": None})
        elif row is not None:
            files[name][index] = json.dumps(row | {action: value})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damage(), st.sampled_from(["text", "implicit"]))
def test_damaged_candidates_and_judgments_give_pairs_or_one_line(tmp_path_factory, edits, method):
    """Any damage to the pairs stage's inputs: pairs with finite margins on the judge's scale, or one line."""
    files = valid_files()
    if method == "implicit":
        scores("judgments", 3.5, -2.0, "implicit")(files)
    apply(files, edits)
    outcome = run_stage(tmp_path_factory.mktemp("damaged"), "pairs", files)
    if outcome.exit_code == 0:
        pairs = [strict_json(line) for line in (outcome.out / "pairs.jsonl").read_text().splitlines()]
        assert len(pairs) <= 3 and all(math.isfinite(p["margin"]) and p["margin"] > 0 for p in pairs)
        sides = [(p[f"{side}_source"], p[f"{side}_score"]) for p in pairs for side in ("chosen", "rejected")]
        assert all(0 <= score <= 5 for source, score in sides if source == "text")
        assert len({source == "implicit" for source, _ in sides}) <= 1  # implicit rewards never meet 0-5 scores


SEED_TEXT = st.one_of(
    st.text(max_size=6), st.sampled_from(["\ud800", " ", "[red]x[/red]"]), st.none(), st.integers(), st.booleans()
)
SEED_RANK = st.one_of(
    st.integers(-2, 3), st.sampled_from([math.nan, math.inf, 10**400, 0.5]), st.none(), st.text(max_size=2)
)
SEED_ROW = st.one_of(
    st.fixed_dictionaries({"prompt": SEED_TEXT, "response": SEED_TEXT}),
    st.fixed_dictionaries(
        {
            "prompt": SEED_TEXT,
            "responses": st.lists(st.fixed_dictionaries({"text": SEED_TEXT, "rank": SEED_RANK}), max_size=3),
        }
    ),
    st.fixed_dictionaries({"question": SEED_TEXT, "answer": SEED_TEXT, "rank": SEED_RANK}),
    st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": SEED_TEXT}),
                max_size=3,
            )
        }
    ),
    st.fixed_dictionaries({"instruction": SEED_TEXT, "output": SEED_TEXT}, optional={"input": SEED_TEXT}),
    st.fixed_dictionaries(
        {
            "message_id": SEED_TEXT,
            "role": st.sampled_from(["prompter", "assistant"]),
            "text": SEED_TEXT,
            "parent_id": SEED_TEXT,
            "rank": SEED_RANK,
        }
    ),
)
SEED_LINE = st.one_of(SEED_ROW.map(lambda row: json.dumps(row)), st.sampled_from(["{cut", "[1]", '"text"', "[" * 3000]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SEED_LINE, min_size=1, max_size=8), st.booleans())
def test_hostile_seed_files_give_counts_that_add_up_or_one_line(tmp_path_factory, lines, ranked):
    """`selfreward data` on mixed, damaged seed rows: counts that add up (exit 0) or one line (exit 2)."""
    root = tmp_path_factory.mktemp("seed")
    path = root / "seed.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", errors="surrogatepass")
    before = tree(root)
    result = invoke("data", path, "--ranked" if ranked else "--no-ranked")
    assert "Traceback" not in result.output and tree(root) == before
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
        return
    assert result.exit_code == 0, result.output
    summary, total = result.output.strip().splitlines()
    rows, usable, skipped = (int(summary.split(f" {word}")[0].split()[-1]) for word in ("rows,", "usable,", "skipped"))
    assert (
        rows == len(lines) and skipped <= rows and total == f"{usable} {'ranked groups' if ranked else 'IFT examples'}"
    )


def test_a_stage_refuses_unusable_seed_data_before_loading_the_model(tiny_model, tmp_path, no_model_loads):
    seed = tmp_path / "seed.jsonl"
    seed.write_text(
        json.dumps({"prompt": 5, "response": "r"})
        + "\n"
        + json.dumps({"messages": [{"role": "system", "content": "s"}]})
        + "\n"
    )
    out = tmp_path / "out"
    result = invoke("prompts", "--out", out, "--set", f"model.name_or_path={tiny_model}", "--set", f"data.ift=[{seed}]")
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        f"error: no usable rows in {seed} (2 rows read, 2 skipped; first problem at line 1: missing or empty 'prompt'"
    )
    assert not out.exists()
