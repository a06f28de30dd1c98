"""`selfreward eval`, `alpaca`, `mt-bench` and `report` on a finished tiny run, with a scripted judge server."""

from __future__ import annotations

import html.parser
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from conftest import invoke

from selfreward.records import read_jsonl


class ScriptedJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions endpoint answering from a fixed script."""

    script = itertools.cycle(["A is better.\nVerdict: A", "Verdict: B", "no idea", "Verdict: tie", "Rating: 7"])
    lock = threading.Lock()
    seen_auth: ClassVar[list[str]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["messages"][-1]["role"] == "user"
        with self.lock:
            text = next(self.script)
            self.seen_auth.append(self.headers.get("Authorization", ""))
        payload = json.dumps(
            {
                "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"completion_tokens": 5},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def server_args(url):
    return [
        "--set",
        "eval.judge.kind=openai",
        "--set",
        f"eval.judge.base_url={url}",
        "--set",
        "eval.judge.model=scripted",
        "--set",
        "eval.judge.api_key_env=SR_TEST_KEY",
    ]


@pytest.fixture(scope="module")
def evaluated_run(finished_run, judge_server):
    run_dir = finished_run[0]
    import os

    os.environ["SR_TEST_KEY"] = "sk-test-secret"
    result = invoke(
        "eval", run_dir, *server_args(judge_server), "--set", "eval.rm_samples=2", "--set", "eval.max_prompts=4"
    )
    assert result.exit_code == 0, result.output
    return run_dir, result.output


def test_eval_writes_rm_metrics_and_head_to_head(evaluated_run):
    run_dir, output = evaluated_run
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert list(summary["rm"]) == ["sft_baseline", "M1", "M2", "M3"]
    for metrics in summary["rm"].values():
        rm = metrics["eft-eval"]
        assert rm["groups"] > 0 and 0 <= rm["pairwise_accuracy"] <= 1 and -1 <= rm["spearman"] <= 1
    matches = [(h["model"], h["opponent"]) for h in summary["head_to_head"]]
    assert matches == [
        ("M1", "sft_baseline"),
        ("M2", "sft_baseline"),
        ("M3", "sft_baseline"),
        ("M2", "M1"),
        ("M3", "M2"),
    ]
    for h in summary["head_to_head"]:
        assert h["prompts"] == 4 and h["win"] + h["tie"] + h["lose"] == pytest.approx(100, abs=0.2)
    assert sum(h["unparsable_verdicts"] for h in summary["head_to_head"]) > 0  # counted, not fatal
    assert "Reward modelling on eft-eval" in output and "Head-to-head" in output


def test_api_key_is_sent_but_never_stored(evaluated_run):
    run_dir = evaluated_run[0]
    assert "Bearer sk-test-secret" in ScriptedJudge.seen_auth
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in {".json", ".jsonl", ".yaml", ".log", ".md", ".html"}:
            assert "sk-test-secret" not in path.read_text(errors="ignore"), path


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.open, self.images, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in {"meta", "br"}:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"unbalanced </{tag}>"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_self_contained_html_with_the_numbers(evaluated_run):
    run_dir = evaluated_run[0]
    result = invoke("report", run_dir)
    assert result.exit_code == 0, result.output
    page_text = (run_dir / "report.html").read_text()
    assert page_text.startswith("<!DOCTYPE html>")
    page = Page()
    page.feed(page_text)
    page.close()
    assert page.open == []
    assert len(page.images) >= 3 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert "http" not in "".join(page.images)
    text = " ".join(page.text)
    summary = json.loads((run_dir / "summary.json").read_text())
    first = summary["iterations"][0]
    assert "Reward modelling on eft-eval" in text and "Head-to-head" in text and "Iteration health" in text
    assert f"{first['pairs']}" in text
    rm = json.loads((run_dir / "eval" / "summary.json").read_text())["rm"]["M1"]["eft-eval"]
    from selfreward.report import cell

    assert cell(rm["pairwise_accuracy"]) in text
    md = (run_dir / "report.md").read_text()
    assert "| sft_baseline |" in md and "## Head-to-head" in md


def test_alpaca_and_mt_bench_formats(evaluated_run, judge_server, tmp_path):
    run_dir = evaluated_run[0]
    prompts = tmp_path / "alpaca.json"
    prompts.write_text(
        json.dumps([{"instruction": "Name a colour.", "dataset": "mine"}, {"instruction": "Say hello."}])
    )
    reference = tmp_path / "ref.json"
    reference.write_text(
        json.dumps(
            [
                {"instruction": "Name a colour.", "output": "Blue.", "generator": "ref"},
                {"instruction": "Say hello.", "output": "Hello!", "generator": "ref"},
            ]
        )
    )
    result = invoke(
        "alpaca", run_dir, "--prompts", prompts, "--reference", reference, "--model", "M1", *server_args(judge_server)
    )
    assert result.exit_code == 0, result.output
    outputs = json.loads((run_dir / "eval" / "alpaca" / "M1" / "model_outputs.json").read_text())
    assert [o["instruction"] for o in outputs] == ["Name a colour.", "Say hello."]
    assert (
        all(o["generator"] == "M1" and isinstance(o["output"], str) for o in outputs)
        and outputs[0]["dataset"] == "mine"
    )
    assert "AlpacaEval" in result.output
    questions = tmp_path / "question.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"question_id": i, "category": "writing", "turns": [f"Write line {i}.", "Now shorten it."]})
            + "\n"
            for i in (81, 82)
        )
    )
    result = invoke(
        "mt-bench", run_dir, "--questions", questions, "--model", "M2", "--grade", *server_args(judge_server)
    )
    assert result.exit_code == 0, result.output
    answers = read_jsonl(run_dir / "eval" / "mt_bench" / "M2.jsonl")
    assert [a["question_id"] for a in answers] == [81, 82]
    assert all(a["model_id"] == "M2" and len(a["choices"][0]["turns"]) == 2 and a["answer_id"] for a in answers)
    grades = json.loads((run_dir / "eval" / "benchmarks.json").read_text())["mt_bench"]["M2"]
    assert grades["graded"] + grades["unparsable"] == 4


def test_eval_errors(finished_run, tmp_path):
    run_dir = finished_run[0]
    result = invoke("eval", run_dir, "--model", "M9")
    assert result.exit_code == 2 and "model M9 is not a checkpoint of" in result.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"instruction": "not a list"}))
    result = invoke("alpaca", run_dir, "--prompts", bad)
    assert result.exit_code == 2 and "is not AlpacaEval format" in result.stderr
    same = ["--set", "eval.rm_samples=2", "--set", "eval.max_prompts=4"]
    result = invoke(
        "eval",
        run_dir,
        "--model",
        "M1",
        "--model",
        "M2",
        *server_args("http://127.0.0.1:9/v1"),
        "--set",
        "eval.judge.model=elsewhere",
        *same,
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert (
        result.exit_code == 2 and len(errors) == 1 and "unreachable" in errors[0] and "Traceback" not in result.stderr
    )
    result = invoke("eval", run_dir, "--model", "M1", "--set", "eval.rm_samples=1", "--set", "eval.max_prompts=4")
    assert result.exit_code == 2 and "(differs in: rm_samples); add --fresh" in result.stderr
    broken = tmp_path / "broken-run"
    broken.mkdir()
    result = invoke("eval", broken)
    assert result.exit_code == 2 and "is not a selfreward run" in result.stderr
