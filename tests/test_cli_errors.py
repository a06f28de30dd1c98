"""What a new user sees on bad input: one line naming the problem, exit code 2, nothing written."""

import json

import pytest
from typer.testing import CliRunner

from selfreward.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "data.ift=[{tmp}/missing.jsonl]"], "data file not found"),
        (["--set", "judge.kk=3"], "unknown key 'judge.kk'"),
        (["--set", "judge.k=three"], "judge.k: Input should be a valid integer"),
        (["--set", "model.name_or_path={tmp}/no/such/model"], "model path does not exist"),
        (["{tmp}/nope.yaml"], "config file not found"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = run("aift", *[a.replace("{tmp}", str(tmp_path)) for a in args], "--out", str(out))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_malformed_rows_are_skipped_and_counted(tmp_path):
    path = tmp_path / "seed.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n{oops\n" + json.dumps({"prompt": 1}) + "\n")
    result = run("data", str(path))
    assert result.exit_code == 0
    assert "3 rows, 1 usable, 2 skipped (first: line 2: not valid JSON" in result.output


def test_model_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("candidates", "--set", f"model.name_or_path={tmp_path / 'empty'}", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "has no config.json" in result.stderr


def test_stage_without_its_input(tiny_model, tmp_path):
    result = run("judge", "--set", f"model.name_or_path={tiny_model}", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "candidates.jsonl not found: run the candidates stage first" in result.stderr


def test_an_unexpected_error_is_one_line_unless_debug_asks_for_the_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr("selfreward.seed_data.load_ift", broken)
    result = run("data", str(tmp_path / "seed.jsonl"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    hint = "run with --debug for the traceback (selfreward --debug COMMAND ...)"
    assert result.stderr.splitlines() == [f"error: unexpected ZeroDivisionError: division by zero; {hint}"]
    debug = run("--debug", "data", str(tmp_path / "seed.jsonl"))
    assert isinstance(debug.exception, ZeroDivisionError)  # raised on, for the traceback
    monkeypatch.setenv("SELFREWARD_DEBUG", "1")
    assert isinstance(run("data", str(tmp_path / "seed.jsonl")).exception, ZeroDivisionError)


def test_report_on_a_truncated_summary_is_one_line(tmp_path):
    import yaml

    from selfreward.config import config_to_dict, load_config

    (tmp_path / "eval").mkdir()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config_to_dict(load_config("demo"))))
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": {}}))
    (tmp_path / "eval" / "summary.json").write_text('{"rm": {"M1": {"pairwise_accuracy": 0.')
    result = run("report", str(tmp_path))
    assert result.exit_code == 2 and "Traceback" not in result.output
    damaged = "not valid JSON (Expecting ',' delimiter at column 38); the file is damaged or cut short"
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'eval' / 'summary.json'}: {damaged}"]
    (tmp_path / "eval" / "summary.json").unlink()
    (tmp_path / "manifest.json").write_text("[1, 2]")
    result = run("report", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'manifest.json'}: not a JSON object"]
