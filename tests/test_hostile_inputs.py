"""Hostile inputs: pickle checkpoints, junk seed rows, junk overrides, judge text, and generated
text with HTML, rich markup and control characters in reports and on the console."""

from __future__ import annotations

import html.parser
import io
import json
import math
import re
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import invoke
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.console import Console

from selfreward.config import ModelConfig, SFTTrainingConfig, config_to_dict, load_config, parse_overrides
from selfreward.errors import SelfRewardError
from selfreward.judging.additive_5pt import ADDITIVE_5PT
from selfreward.models import load_model
from selfreward.seed_data import load_groups, load_ift, load_ranked

parse_score = ADDITIVE_5PT.parse

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCRIPT = "<script>alert(1)</script>"
MARKUP = "[red]x[/red] [/bold]"
CONTROL = "bell\x07 esc\x1b[31m nul\x00 cr\r"
HOSTILE = f"{SCRIPT} {MARKUP} {CONTROL} $\\frac$"


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


# model weights: safetensors only unless model.allow_pickle


@pytest.fixture(scope="module")
def pickle_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with its weights in a pickle `pytorch_model.bin` and no safetensors file."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    directory = tmp_path_factory.mktemp("pickle-model")
    model.save_pretrained(directory, safe_serialization=False)  # transformers 5 writes safetensors anyway
    (directory / "model.safetensors").unlink(missing_ok=True)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (directory / name).write_bytes((tiny_model / name).read_bytes())
    return directory


def test_pickle_weights_are_refused_by_default(pickle_model):
    with pytest.raises(SelfRewardError) as caught:
        load_model(str(pickle_model), torch.float32, "cpu")
    message = one_line(caught.value)
    assert "pytorch_model.bin" in message and "model.allow_pickle=true" in message


def test_models_load_without_hub_kernels_unless_asked(tiny_model):
    """transformers turns Hub kernels on wherever `kernels` is installed, and on a GPU fetches them at the
    first training step, which an offline run cannot: they stay off unless model.hub_kernels is set."""
    from transformers import AutoModelForCausalLM

    from selfreward.engines.hf import HFEngine
    from selfreward.training import load_for_training

    assert AutoModelForCausalLM.from_pretrained(str(tiny_model)).use_kernels  # transformers' default
    assert not load_model(str(tiny_model), torch.float32, "cpu").use_kernels
    model, _ = load_for_training(
        ModelConfig(name_or_path=str(tiny_model)), str(tiny_model), SFTTrainingConfig(), "cpu", "sft"
    )
    assert not model.use_kernels
    assert not HFEngine(ModelConfig(name_or_path=str(tiny_model), device="cpu"), 2).model.use_kernels


def test_allow_pickle_loads_the_same_weights(tiny_model, pickle_model):
    from selfreward.training import load_for_training

    loaded = load_model(str(pickle_model), torch.float32, "cpu", allow_pickle=True)
    reference = load_model(str(tiny_model), torch.float32, "cpu")
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    model, _ = load_for_training(
        ModelConfig(name_or_path=str(pickle_model), allow_pickle=True),
        str(pickle_model),
        SFTTrainingConfig(),
        "cpu",
        "sft",
    )
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight)
    with pytest.raises(SelfRewardError, match="allow_pickle"):
        load_for_training(
            ModelConfig(name_or_path=str(pickle_model)), str(pickle_model), SFTTrainingConfig(), "cpu", "sft"
        )


def test_cli_refuses_a_pickle_model_in_one_line_and_accepts_it_when_allowed(pickle_model, tmp_path):
    def candidates(out, *overrides):
        (out / "prompts.jsonl").parent.mkdir()
        (out / "prompts.jsonl").write_text(json.dumps({"id": "p1", "prompt": "explain the task"}) + "\n")
        sizes = ["--set", "candidates.max_new_tokens=4", "--set", "candidates.n=2"]
        return invoke("candidates", "--set", f"model.name_or_path={pickle_model}", *sizes, *overrides, "--out", out)

    refused = candidates(tmp_path / "refused")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert len(refused.stderr.strip().splitlines()) == 1 and "model.allow_pickle=true" in refused.stderr
    allowed = candidates(tmp_path / "allowed", "--set", "model.allow_pickle=true")
    assert allowed.exit_code == 0, allowed.output
    assert (tmp_path / "allowed" / "candidates.jsonl").exists()


def test_custom_code_is_not_run_without_trust_remote_code(tiny_model, tmp_path):
    """A checkpoint whose config asks for its own Python code: refused in one line, the code never runs."""
    directory = tmp_path / "custom"
    directory.mkdir()
    for source in tiny_model.iterdir():
        (directory / source.name).write_bytes(source.read_bytes())
    config = json.loads((directory / "config.json").read_text())
    config |= {
        "model_type": "hostile",
        "auto_map": {"AutoConfig": "hostile.Config", "AutoModelForCausalLM": "hostile.Model"},
    }
    (directory / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "code-ran"
    (directory / "hostile.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(SelfRewardError) as caught:
        load_model(str(directory), torch.float32, "cpu")
    assert "model.trust_remote_code=true" in one_line(caught.value)
    assert not marker.exists()


# judge scores

SCORE_LIKE = st.builds(
    "".join,
    st.tuples(
        st.text(max_size=12),
        st.sampled_from(["Score: ", "score of ", "Score = ", "**Score:** ", "score is ", "Score:\n"]),
        st.from_regex(r"-?\d{1,400}(\.\d{1,6})?(\s?(/|out of)\s?-?\d{1,400}(\.\d{1,3})?)?", fullmatch=True),
        st.text(max_size=12),
    ),
)


@PROPERTY
@given(st.one_of(st.text(), SCORE_LIKE))
@example("Score: 9" + "9" * 400 + " / " + "9" * 400)
@example("Score: 3/0")
def test_parse_score_never_raises_and_stays_in_range(judgment):
    score = parse_score(judgment)
    assert score is None or (isinstance(score, float) and 0 <= score <= 5)


# seed data

TEXT = st.one_of(st.text(min_size=1, max_size=20).filter(str.strip), st.sampled_from([SCRIPT, MARKUP, CONTROL]))
JUNK_TEXT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.sampled_from(["", "  ", "\n\t", "\ud800 lone surrogate"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
RANK = st.one_of(st.integers(-3, 10), st.floats(-3, 10))
JUNK_RANK = st.one_of(
    st.booleans(),
    st.text(max_size=5),
    st.sampled_from([math.nan, math.inf, -math.inf, 10**400]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
JUNK = st.one_of(JUNK_TEXT, JUNK_RANK)
LABELS = st.one_of(
    JUNK,
    st.fixed_dictionaries(
        {"name": st.just(["spam", "quality"]), "value": st.lists(st.one_of(RANK, JUNK_RANK), max_size=2)}
    ),
    st.fixed_dictionaries(
        {"quality": st.one_of(RANK, JUNK_RANK, st.fixed_dictionaries({"value": st.one_of(RANK, JUNK_RANK)}))}
    ),
)
NOT_A_NONEMPTY_LIST = st.one_of(
    st.just([]),
    st.none(),
    st.integers(),
    st.text(max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)


@st.composite
def ift_row(draw, bad):
    row = {"prompt": draw(TEXT), "response": draw(TEXT)}
    if bad:
        row[draw(st.sampled_from(["prompt", "response"]))] = draw(JUNK_TEXT)
    return row


@st.composite
def question_answer_row(draw, bad):
    row = {"question": draw(TEXT), "answer": draw(TEXT), "rank": draw(st.one_of(st.none(), RANK))}
    if bad:
        key = draw(st.sampled_from(["question", "answer", "rank"]))
        row[key] = draw(JUNK_RANK if key == "rank" else JUNK_TEXT)
    return row


@st.composite
def ranked_row(draw, bad):
    responses = [
        {"text": draw(TEXT), "rank": draw(RANK), "labels": draw(LABELS)} for _ in range(draw(st.integers(1, 3)))
    ]
    row = {"prompt": draw(TEXT), "responses": responses, "id": draw(st.one_of(TEXT, JUNK))}
    if bad:
        which, item = (
            draw(st.sampled_from(["prompt", "responses", "text", "rank", "item"])),
            draw(st.sampled_from(range(len(responses)))),
        )
        if which == "prompt":
            row["prompt"] = draw(JUNK_TEXT)
        elif which == "responses":
            row["responses"] = draw(NOT_A_NONEMPTY_LIST)
        elif which == "item":
            responses[item] = draw(st.one_of(TEXT, JUNK_RANK))
        else:
            responses[item][which] = draw(JUNK_TEXT if which == "text" else st.one_of(st.none(), JUNK_RANK))
    return row


@st.composite
def message_row(draw, bad):
    ids = st.sampled_from(["r1", "r2", "a1", "a2"])
    row = {
        "message_id": draw(ids),
        "parent_id": draw(st.one_of(st.none(), ids, JUNK)),
        "role": draw(st.sampled_from(["prompter", "assistant"])),
        "text": draw(TEXT),
        "rank": draw(st.one_of(st.none(), RANK)),
        "lang": draw(st.sampled_from(["en", "de"])),
        "labels": draw(LABELS),
        "deleted": draw(st.booleans()),
    }
    if bad:
        key = draw(st.sampled_from(["message_id", "role", "text", "rank"]))
        row[key] = draw({"rank": JUNK_RANK, "role": st.one_of(JUNK_TEXT, st.just(MARKUP))}.get(key, JUNK_TEXT))
    return row


@st.composite
def tree_row(draw, bad):
    reply = st.fixed_dictionaries(
        {
            "text": TEXT,
            "rank": st.one_of(st.none(), RANK),
            "role": st.sampled_from(["assistant", "prompter"]),
            "labels": LABELS,
        }
    )
    replies = draw(st.lists(st.one_of(reply, JUNK), max_size=3))
    root = {"message_id": draw(st.one_of(TEXT, JUNK)), "text": draw(TEXT), "lang": "en", "replies": replies}
    row = {"message_tree_id": draw(st.one_of(TEXT, JUNK)), "prompt": root}
    if bad:
        which = draw(st.sampled_from(["text", "replies", "reply rank", "reply text"]))
        if which == "text":
            root["text"] = draw(JUNK_TEXT)
        elif which == "replies":
            root["replies"] = draw(
                st.one_of(
                    st.integers(1, 9),
                    st.text(min_size=1, max_size=3),
                    st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=1),
                )
            )
        else:  # an assistant reply in the run's language that would be used
            rank, text = (draw(JUNK_RANK), draw(TEXT)) if which == "reply rank" else (draw(RANK), draw(JUNK_TEXT))
            replies.insert(draw(st.integers(0, len(replies))), {"text": text, "rank": rank, "role": "assistant"})
    return row


SHAPES = {
    "ift-jsonl": ift_row,
    "question-answer": question_answer_row,
    "ranked-jsonl": ranked_row,
    "oasst-messages": message_row,
    "oasst-tree": tree_row,
}
# Shapes where every good row is a usable group (the others need parents, replies, ranks).
ONE_GROUP_PER_ROW = {"ift-jsonl", "ranked-jsonl"}


NOT_AN_OBJECT = st.sampled_from([b"{oops", b"[1, 2]", b"\xff\xfe", b'"text"', b"[" * 5000])


def rows_of(shape: str) -> st.SearchStrategy:
    """(shape, [(is_bad, line)]): rows of one shape, some with a junk value, some lines not JSON objects."""
    row = st.booleans().flatmap(
        lambda bad: st.tuples(st.just(bad), SHAPES[shape](bad).map(lambda r: json.dumps(r).encode()))
    )
    return st.tuples(
        st.just(shape), st.lists(st.one_of(row, st.tuples(st.just(True), NOT_AN_OBJECT)), min_size=1, max_size=6)
    )


def write_lines(directory: str, lines: list[bytes]) -> str:
    path = Path(directory) / "seed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


@PROPERTY
@given(st.sampled_from(sorted(SHAPES)).flatmap(rows_of))
def test_seed_rows_of_every_shape_with_junk_values_are_counted(case):
    shape, rows = case
    bad_lines = [number for number, (bad, _) in enumerate(rows, 1) if bad]
    good = len(rows) - len(bad_lines)
    with tempfile.TemporaryDirectory() as directory:
        path = write_lines(directory, [line for _, line in rows])
        try:
            groups, report = load_groups(path)
        except SelfRewardError as exc:
            message = one_line(exc)
            assert (
                message.startswith("no usable rows") and f"{len(rows)} rows read, {len(bad_lines)} skipped" in message
            )
            assert not bad_lines or f"first problem at line {bad_lines[0]}:" in message
            assert shape not in ONE_GROUP_PER_ROW or good == 0
            return
    assert (report.format, report.rows, report.skipped) == (shape, len(rows), len(bad_lines))
    assert (report.first_bad or "").startswith(f"line {bad_lines[0]}:" if bad_lines else "")
    assert shape not in ONE_GROUP_PER_ROW or len(groups) == good
    for group in groups:
        assert group.prompt.strip() and all(r.text.strip() and math.isfinite(r.rank) for r in group.responses)
        assert all(r.quality is None or math.isfinite(r.quality) for r in group.responses)
        assert [r.rank for r in group.responses] == sorted(r.rank for r in group.responses)


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8,
)
KEYS = [
    "prompt",
    "response",
    "responses",
    "question",
    "answer",
    "rank",
    "message_id",
    "parent_id",
    "role",
    "text",
    "lang",
    "labels",
    "message_tree_id",
    "replies",
]
JSON_ROW = st.fixed_dictionaries({}, optional={key: JSON for key in KEYS})
LINE = st.one_of(
    JSON_ROW.map(lambda row: json.dumps(row).encode()),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.text().map(lambda text: text.replace("\n", " ").encode("utf-8", "surrogatepass")),
    st.binary(max_size=20).map(lambda data: data.replace(b"\n", b" ")),
    st.sampled_from(
        [b"[" * 100_000, b'{"rank": ' + b"1" * 5000 + b"}", b"\xff\xfe{}", b'{"prompt": "\\ud800", "response": "x"}']
    ),
)


@PROPERTY
@given(st.lists(LINE, max_size=6), st.booleans())
@example([b"[" * 100_000, b'{"rank": ' + b"1" * 5000 + b"}", b"\xff\xfe"], False)
def test_arbitrary_jsonl_lines_load_or_fail_in_one_line(lines, ranked):
    with tempfile.TemporaryDirectory() as directory:
        path = write_lines(directory, lines)
        try:
            _, reports = (load_ranked if ranked else load_ift)([path])
        except SelfRewardError as exc:
            one_line(exc)
            return
    (report,) = reports
    assert report.rows == sum(1 for line in lines if line.strip())
    assert report.skipped <= report.rows and "\n" not in report.summary()


def test_unreadable_sources_are_one_line_errors(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(SelfRewardError, match="as Parquet") as caught:
        load_ift([str(broken)])
    one_line(caught.value)


# config overrides

OVERRIDE_KEYS = st.one_of(
    st.sampled_from(
        [
            "judge.k",
            "model",
            "model.dtype",
            "model.allow_pickle",
            "sft.batch_size",
            "data.ift",
            "eval.judge",
            "eft.teacher",
            "seed",
            "",
            ".",
            "a..b",
            "judge.k.x",
        ]
    ),
    st.text(max_size=10),
)
OVERRIDE_VALUES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "[[[[",
            "&a [*a]",
            "!!python/object/apply:os.system [echo]",
            "1e999",
            ".nan",
            "{a: 1}",
            "[1, 2]",
            "~",
            "2020-01-01",
            "!!binary aGk=",
            "\x00",
            "'open",
            "{1: 2}",
        ]
    ),
)
OVERRIDE = st.one_of(st.text(max_size=20), st.builds("{}={}".format, OVERRIDE_KEYS, OVERRIDE_VALUES))


@PROPERTY
@given(st.lists(OVERRIDE, max_size=4))
@example(["data.ift=" + "[" * 3000])
def test_arbitrary_overrides_give_a_config_or_one_line_error(overrides):
    try:
        parse_overrides(overrides)
        load_config("demo", overrides)
    except SelfRewardError as exc:
        one_line(exc)


@PROPERTY
@given(
    st.one_of(
        st.text(),
        st.binary().map(lambda data: data.decode("latin-1")),
        st.sampled_from(["base: [1]", "{1: 2}", "- a", "model: {allow_pickle: maybe}"]),
    )
)
@example("[" * 3000)
def test_arbitrary_config_files_give_a_config_or_one_line_error(text):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            load_config(str(path))
        except SelfRewardError as exc:
            one_line(exc)


def test_config_file_problems_are_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    (tmp_path / "latin1.yaml").write_bytes(b"seed: 1 # caf\xe9\n")
    for name, message in (("a.yaml", "a loop"), ("latin1.yaml", "not UTF-8 text")):
        with pytest.raises(SelfRewardError, match=message) as caught:
            load_config(str(tmp_path / name))
        one_line(caught.value)


# generated text in reports and on the console


@pytest.fixture
def hostile_run(tmp_path) -> Path:
    """A run directory by hand whose records, stats and names carry HTML, markup and control characters."""
    run = tmp_path / "run"
    config = config_to_dict(load_config("demo", [f"model.name_or_path={json.dumps(HOSTILE)}"]))
    (run / "iter1").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "manifest.json").write_text(
        json.dumps(
            {
                "created": HOSTILE,
                "seed": 0,
                "config": config,
                "versions": {"selfreward": HOSTILE},
                "stages": {"dpo1": {"status": HOSTILE}},
            }
        )
    )
    for name, row in (
        ("prompts", {"id": "p1", "prompt": HOSTILE}),
        ("candidates", {"id": "p1", "candidates": [HOSTILE, HOSTILE]}),
    ):
        (run / "iter1" / f"{name}.jsonl").write_text(json.dumps(row) + "\n")
    (run / "iter1" / "judgments.stats.json").write_text(
        json.dumps({"score_histogram": {"0": 1, "5": 1}, "score_source": HOSTILE, "parse_rate_text": 0.5})
    )
    (run / "iter1" / "pairs.stats.json").write_text(json.dumps({"pairs": 1, "tie_rate": 0.0}))
    metrics = {"groups": 2, "pairwise_accuracy": 0.5, "judge_parse_rate": 1.0}
    (run / "eval").mkdir()
    (run / "eval" / "summary.json").write_text(
        json.dumps(
            {
                "rm": {HOSTILE: {HOSTILE: metrics}, "M1": {HOSTILE: metrics}},
                "head_to_head": [
                    {
                        "model": HOSTILE,
                        "opponent": "M1",
                        "judge": HOSTILE,
                        "prompts": 2,
                        "win": 50.0,
                        "tie": 0.0,
                        "lose": 50.0,
                        "unparsable_verdicts": 0,
                    }
                ],
                "answers": {HOSTILE: {"answers": 2, "mean_chars": 30.0, "mean_tokens": 9.0}},
            }
        )
    )
    return run


class Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_report_escapes_generated_text(hostile_run):
    result = invoke("report", hostile_run)
    assert result.exit_code == 0, result.output
    page = (hostile_run / "report.html").read_text()
    parser = Tags()
    parser.feed(page)
    assert parser.tags <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "h1",
        "h2",
        "h3",
        "p",
        "code",
        "table",
        "tr",
        "th",
        "td",
        "img",
    }
    assert "<script" not in page.lower() and "\x1b" not in page and "\x00" not in page
    assert SCRIPT in "".join(parser.text) and "esc\\x1b[31m" in page  # shown as text, control characters visible
    markdown = (hostile_run / "report.md").read_text()
    assert "<script" not in markdown and "\x1b" not in markdown and "&lt;script&gt;" in markdown
    for line in markdown.splitlines():
        if line.startswith("| iteration | score histogram"):
            header_cells = len(re.split(r"(?<!\\)\|", line))
        elif line.startswith("| 1 | 1/1"):
            assert len(re.split(r"(?<!\\)\|", line)) == header_cells  # pipes in text do not add columns


def recording_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=1000, soft_wrap=True, color_system=None), buffer


def test_console_tables_show_generated_text_literally(hostile_run, monkeypatch):
    from selfreward import cli
    from selfreward.report import tables

    console, buffer = recording_console()
    monkeypatch.setattr(cli, "console", console)
    cli._print_tables(hostile_run, ("Reward modelling", "Head-to-head", "Answer lengths"), tables)
    cli.show_stats({"judge": {"score_source": HOSTILE, "model": MARKUP}})
    shown = buffer.getvalue()
    assert shown.count(SCRIPT) >= 4 and shown.count(MARKUP) >= 4
    assert "\x1b" not in shown and "\x07" not in shown and "esc\\x1b[31m" in shown


def test_data_command_and_errors_show_row_text_literally(tmp_path):
    path = tmp_path / "seed.jsonl"
    rows = [
        {"message_id": "r1", "role": "prompter", "text": "q?", "parent_id": None},
        {"message_id": "a1", "role": MARKUP, "text": "a", "parent_id": "r1", "rank": 0},
        {"message_id": "a2", "role": "assistant", "text": "answer", "parent_id": "r1", "rank": 0},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    shown = invoke("data", path)
    assert shown.exit_code == 0, shown.output
    assert "unknown role '[red]x[/red] [/bold]'" in shown.output
    path.write_text("".join(json.dumps(row) + "\n" for row in rows[1:2]) + CONTROL + "\n")
    failed = invoke("data", path)
    assert failed.exit_code == 2 and "Traceback" not in failed.output
    (line,) = failed.stderr.strip().splitlines()
    assert line.startswith("error: no usable rows") and "unknown role '[red]x[/red] [/bold]'" in line


def test_run_log_prints_stage_tags_and_data_literally(tmp_path):
    from selfreward.rundir import Run

    console, buffer = recording_console()
    Run(tmp_path, load_config("demo"), console).log(f"[sft] seed data: {MARKUP}")
    assert buffer.getvalue().strip() == f"[sft] seed data: {MARKUP}"
