import json

import pytest

from selfreward.errors import SelfRewardError
from selfreward.seed_data import DEMO_FILES, load_ift, load_ranked


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _message(mid, parent, role, text, rank=None, lang="en", quality=None):
    row = {
        "message_id": mid,
        "parent_id": parent,
        "role": role,
        "text": text,
        "lang": lang,
        "rank": rank,
        "deleted": False,
    }
    if quality is not None:
        row["labels"] = {"name": ["spam", "quality"], "value": [0.0, quality], "count": [3, 3]}
    return row


def test_oasst_messages_first_turn_english_rank0(tmp_path):
    path = _jsonl(
        tmp_path / "m.jsonl",
        [
            _message("r1", None, "prompter", "Question one?"),
            _message("a1", "r1", "assistant", "good", 0, quality=0.9),
            _message("a2", "r1", "assistant", "bad", 1, quality=0.2),
            _message("a3", "r1", "assistant", "unranked"),
            _message("f1", "a1", "prompter", "follow-up?"),
            _message("a4", "f1", "assistant", "second turn", 0),
            _message("r2", None, "prompter", "Frage?", lang="de"),
            _message("a5", "r2", "assistant", "Antwort", 0, lang="de"),
            {"message_id": "x", "role": "robot", "text": "?"},
        ],
    )
    ift, reports = load_ift([path])
    assert [(e.prompt, e.response) for e in ift] == [("Question one?", "good")]
    assert reports[0].format == "oasst-messages" and reports[0].skipped == 1 and "unknown role" in reports[0].first_bad
    groups, _ = load_ranked([path])
    assert len(groups) == 1
    assert [(r.text, r.rank, r.quality) for r in groups[0].responses] == [("good", 0, 0.9), ("bad", 1, 0.2)]


def test_oasst_tree(tmp_path):
    tree = {
        "message_tree_id": "t1",
        "prompt": {
            "message_id": "t1",
            "text": "Root?",
            "role": "prompter",
            "lang": "en",
            "replies": [
                {"message_id": "b", "text": "second", "role": "assistant", "lang": "en", "rank": 1, "replies": []},
                {"message_id": "a", "text": "first", "role": "assistant", "lang": "en", "rank": 0, "replies": []},
            ],
        },
    }
    path = _jsonl(tmp_path / "t.jsonl", [tree, {"message_tree_id": "t2", "prompt": "not a tree"}])
    groups, reports = load_ranked([path])
    assert [r.text for r in groups[0].responses] == ["first", "second"]
    assert reports[0].skipped == 1
    assert load_ift([path])[0][0].response == "first"


def test_plain_jsonl_rows_and_malformed_rows_are_counted(tmp_path):
    path = _jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "p1", "response": "r1"},
            "{not json",
            {"prompt": "", "response": "r"},
            [1, 2],
            {"prompt": "p2", "response": "r2"},
        ],
    )
    ift, reports = load_ift([path])
    assert [e.prompt for e in ift] == ["p1", "p2"]
    assert (reports[0].rows, reports[0].skipped) == (5, 3)
    assert reports[0].first_bad.startswith("line 2: not valid JSON")


def test_ranked_rows_and_question_answer_rows(tmp_path):
    ranked = _jsonl(
        tmp_path / "r.jsonl",
        [
            {
                "prompt": "q",
                "responses": [{"text": "meh", "rank": 2}, {"text": "best", "rank": 0}, {"text": "ok", "rank": 1}],
            }
        ],
    )
    groups, _ = load_ranked([ranked])
    assert [r.text for r in groups[0].responses] == ["best", "ok", "meh"]
    qa = _jsonl(
        tmp_path / "qa.jsonl",
        [
            {"question": "q1", "answer": "b", "rank": 1.0},
            {"question": "q1", "answer": "a", "rank": 0.0},
            {"question": "q2", "answer": "c", "rank": 2.0},
        ],
    )
    groups, _ = load_ranked([qa])
    assert len(groups) == 1 and [r.text for r in groups[0].responses] == ["a", "b"]
    assert [e.prompt for e in load_ift([qa])[0]] == ["q1"]  # q2 has no rank-0 answer


def test_errors(tmp_path):
    with pytest.raises(SelfRewardError, match="data file not found"):
        load_ift([str(tmp_path / "missing.jsonl")])
    bad = _jsonl(tmp_path / "bad.jsonl", ["nope", {"text": "x"}])
    with pytest.raises(SelfRewardError, match=r"no usable rows .* first problem at line 1"):
        load_ift([bad])
    single = _jsonl(tmp_path / "single.jsonl", [{"prompt": "p", "response": "r"}])
    with pytest.raises(SelfRewardError, match="two or more ranked"):
        load_ranked([single])


def test_demo_data_is_embedded_and_sized():
    ift, _ = load_ift(["demo"])
    groups, _ = load_ranked(["demo"])
    assert len(ift) >= 60 and len(groups) >= 30
    assert all(len(g.responses) == 3 and [r.rank for r in g.responses] == [0, 1, 2] for g in groups)
    assert not {e.prompt for e in ift} & {g.prompt for g in groups}
    assert all(p.exists() for p in DEMO_FILES.values())


def test_shared_oasst_files(shared_data):
    oasst = shared_data / "oasst1"
    groups, _ = load_ranked([str(oasst / "oasst1_en_validation_messages.jsonl")])
    assert len(groups) == 186 and sum(len(g.responses) for g in groups) == 541
    assert sum(r.quality is not None for g in groups for r in g.responses) > 400
    ranked_view, _ = load_ranked([str(oasst / "oasst1_en_validation_firstturn_ranked.jsonl")])
    assert {g.prompt for g in ranked_view} == {g.prompt for g in groups}
    trees, _ = load_ranked([str(oasst / "oa_en_100_tree.jsonl")])
    assert len(trees) == 99


def chat(*turns: str) -> dict:
    """A chat row: `role: content` turns."""
    return {"messages": [dict(zip(("role", "content"), turn.split(": ", 1), strict=True)) for turn in turns]}


def ranked(prompt: str, *ranks: int) -> dict:
    """A ranked row: answers `a`, `b`, ... with the given ranks."""
    return {"prompt": prompt, "responses": [{"text": "abcdef"[i], "rank": rank} for i, rank in enumerate(ranks)]}


def test_each_row_is_read_in_its_own_format_and_a_bad_first_row_spoils_nothing(tmp_path):
    path = _jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"text": "no format at all"},
            {"prompt": "p1", "response": "r1"},
            chat("user: chat question", "assistant: chat answer", "user: later turn"),
            {"instruction": "Translate.", "input": "bonjour", "output": "hello"},
            {"instruction": "Name a colour.", "input": "", "output": "Blue."},
            chat("system: be brief", "user: q", "assistant: a"),
            chat("user: no answer"),
            {"instruction": "Broken.", "input": 3, "output": "x"},
        ],
    )
    ift, (report,) = load_ift([path])
    assert [(e.prompt, e.response) for e in ift] == [
        ("p1", "r1"),
        ("chat question", "chat answer"),
        ("Translate.\n\nbonjour", "hello"),
        ("Name a colour.", "Blue."),
    ]
    assert report.format == "ift-jsonl+chat-messages+alpaca"
    assert (report.rows, report.groups, report.skipped) == (8, 4, 4)
    assert report.first_bad.startswith("line 1: unrecognised row (expected the keys of one of:")


def test_chat_rows_need_a_user_turn_then_the_answer(tmp_path):
    path = _jsonl(
        tmp_path / "chat.jsonl",
        [
            chat("system: be brief", "user: q", "assistant: a"),
            {"messages": "not a list"},
            chat("user: q2", "assistant: a2"),
        ],
    )
    ift, (report,) = load_ift([path])
    assert [e.prompt for e in ift] == ["q2"] and report.skipped == 2
    expected = "must start with a user turn and the assistant's answer (the first roles: 'system', 'user')"
    assert report.first_bad == f"line 1: `messages` {expected}"


def test_ranked_groups_without_a_strict_preference_are_counted_as_left_out(tmp_path):
    rows = [ranked("tied", 1, 1), ranked("single", 0), ranked("good", 0, 1), ranked("partly tied", 0, 0, 2)]
    path = _jsonl(tmp_path / "ranked.jsonl", rows)
    groups, (report,) = load_ranked([path])
    assert [g.prompt for g in groups] == ["good", "partly tied"]
    assert report.groups == 2 and report.left_out == {"whose responses all tie": 1, "with a single ranked response": 1}
    left_out = "left out: 1 whose responses all tie, 1 with a single ranked response"
    assert report.summary().endswith(f"4 rows, 2 usable, 0 skipped; {left_out}")
    ift, (ift_report,) = load_ift([path])
    assert [e.prompt for e in ift] == ["single", "good", "partly tied"]
    assert ift_report.left_out == {"without a rank-0 answer": 1}
    tied = _jsonl(tmp_path / "tied.jsonl", [ranked("tied", 0, 0)])
    with pytest.raises(SelfRewardError, match=r"ranks in .*tied\.jsonl \(left out: 1 whose responses all tie\)$"):
        load_ranked([tied])


def test_the_data_command_prints_counts_that_add_up(tmp_path):
    from conftest import invoke

    rows = [ranked("p", 0, 0), ranked("q", 0, 1), {"prompt": "q", "response": "repeated prompt"}, "{cut"]
    path = _jsonl(tmp_path / "ranked.jsonl", rows)
    for is_ranked, usable in ((True, 1), (False, 2)):
        result = invoke("data", path, "--ranked" if is_ranked else "--no-ranked")
        assert result.exit_code == 0, result.output
        lines = result.output.strip().splitlines()
        assert f"4 rows, {usable} usable, 1 skipped" in lines[0]
        assert lines[-1] == f"{usable} {'ranked groups' if is_ranked else 'IFT examples'}"
