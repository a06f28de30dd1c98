"""The OpenAI-compatible engine against a fault-injecting server on 127.0.0.1: retries, Retry-After,
non-retryable errors and the circuit breaker, counted by the requests the server saw."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selfreward.config import load_config
from selfreward.engines import Request, Sampling, make_judge_engine
from selfreward.errors import SelfRewardError

KEY = "sk-fault-secret"
SAMPLING = Sampling(0.0, 1.0, 16)


class FaultServer(ThreadingHTTPServer):
    """Answers the k-th request for a prompt with `script[prompt][k]` (the last action repeats)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FaultHandler)
        self.script: dict[str, list[str]] = {}
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_action(self, prompt: str) -> str:
        with self.lock:
            actions = self.script[prompt]
            action = actions[min(self.seen[prompt], len(actions) - 1)]
            self.seen[prompt] += 1
        return action


class FaultHandler(BaseHTTPRequestHandler):
    server: FaultServer

    def do_POST(self):  # http.server's name
        prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][-1]["content"]
        action = self.server.next_action(prompt)
        auth = self.headers.get("Authorization", "")
        if action.startswith("late "):  # let the other requests go first
            self.server.release.wait(0.2)
            action = action.removeprefix("late ")
        if action == "hang":  # longer than the client's timeout
            self.server.release.wait(10)
        elif action == "drop":  # close the socket without a reply
            return
        elif action.startswith("status"):  # status CODE [RETRY-AFTER]
            _, code, *retry_after = action.split()
            self.reply(
                int(code), f"refused, you sent {auth}".encode(), {"Retry-After": retry_after[0]} if retry_after else {}
            )
        elif action == "malformed":
            self.reply(200, b'{"choices": [{"message": "' + auth.encode())
        elif action == "no_choices":
            self.reply(200, b'{"object": "error"}')
        elif action == "truncated":  # announce more bytes than are sent, then close
            self.send_response(200)
            self.send_header("Content-Length", "500")
            self.end_headers()
            self.wfile.write(b'{"choices": [{"mess')
        else:
            payload = {
                "choices": [{"message": {"role": "assistant", "content": f"judged {prompt}"}, "finish_reason": "stop"}],
                "usage": {"completion_tokens": 2},
            }
            self.reply(200, json.dumps(payload).encode())

    def reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(code)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("SR_FAULT_KEY", KEY)
    server = FaultServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def engine_for(server: FaultServer, **settings):
    """The engine `make_judge_engine` builds from `eval.judge` overrides (tiny backoff by default)."""
    settings = {"timeout": 10, "concurrency": 1, "backoff_initial": 0.001, "backoff_max": 0.01, **settings}
    overrides = [
        f"eval.judge.{k}={v}"
        for k, v in {
            "kind": "openai",
            "base_url": server.url,
            "model": "faulty",
            "api_key_env": "SR_FAULT_KEY",
            **settings,
        }.items()
    ]
    config = load_config(None, overrides)
    return make_judge_engine(config, config.eval.judge, "unused")


def generate(server: FaultServer, script: dict[str, list[str]], **settings) -> list[str]:
    server.script = script
    engine = engine_for(server, **settings)
    try:
        return [c.text for c in engine.generate([Request.user(p) for p in script], SAMPLING, seed=0)]
    finally:
        engine.close()


def failure(server: FaultServer, script: dict[str, list[str]], **settings) -> str:
    with pytest.raises(SelfRewardError) as caught:
        generate(server, script, **settings)
    message = str(caught.value)
    assert "\n" not in message and KEY not in message
    return message


FAULTS = [
    "hang",
    "drop",
    "truncated",
    "malformed",
    "no_choices",
    "status 408",
    "status 429",
    "status 500",
    "status 502",
    "status 503",
]


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_retried_until_success(server, fault, caplog):
    settings = {"timeout": 1} if fault == "hang" else {}
    texts = generate(server, {"p": [fault, fault, "ok"], "q": ["ok"]}, max_retries=2, **settings)
    assert texts == ["judged p", "judged q"]
    assert server.seen == {"p": 3, "q": 1}
    assert len(re.findall(r"retry \d/2", caplog.text)) == 2 and KEY not in caplog.text


@pytest.mark.parametrize("failures", [1, 4])
def test_success_after_k_failures_needs_k_retries(server, failures):
    assert generate(server, {"p": ["status 503"] * failures + ["ok"]}, max_retries=failures) == ["judged p"]
    assert server.seen == {"p": failures + 1}
    server.seen.clear()
    message = failure(server, {"p": ["status 503"] * failures + ["ok"]}, max_retries=failures - 1)
    assert server.seen == {"p": failures}
    url = server.url + "/chat/completions"
    assert (
        message
        == f"judge server {url}: a request failed {failures} attempts (last: HTTP 503); 0/1 requests of this batch done, {failures} attempts sent; raise max_retries or check the server"
    )


def test_exhausted_request_stops_the_batch(server):
    message = failure(
        server, {"a": ["ok"], "b": ["status 500"], "c": ["ok"]}, max_retries=2, max_consecutive_failures=50
    )
    assert server.seen == {"a": 1, "b": 3}  # c is never sent
    url = server.url + "/chat/completions"
    assert (
        message
        == f"judge server {url}: a request failed 3 attempts (last: HTTP 500); 1/3 requests of this batch done, 4 attempts sent; raise max_retries or check the server"
    )


@pytest.mark.parametrize("code", [400, 401, 404, 422])
def test_client_errors_fail_at_once_without_the_key(server, code):
    message = failure(server, {"a": [f"status {code}"], "b": ["ok"]}, max_retries=5)
    assert server.seen == {"a": 1}
    assert message == f"judge server {server.url}/chat/completions answered HTTP {code}: refused, you sent Bearer ***"


@pytest.mark.parametrize(
    ("code", "retry_after", "backoff_max", "expected_wait"),
    [(429, "1", 5, "1.00"), (429, "3600", 0.05, "0.05"), (503, "3600", 0.05, "0.05")],
)
def test_retry_after_sets_the_wait_up_to_backoff_max(server, caplog, code, retry_after, backoff_max, expected_wait):
    assert generate(server, {"p": [f"status {code} {retry_after}", "ok"]}, max_retries=1, backoff_max=backoff_max) == [
        "judged p"
    ]
    assert server.seen == {"p": 2}
    assert re.findall(r"retry 1/1 in ([\d.]+) s", caplog.text) == [expected_wait]


def test_without_retry_after_the_backoff_applies(server, caplog):
    generate(server, {"p": ["status 429", "status 429", "ok"]}, max_retries=2, backoff_initial=0.001, backoff_max=0.004)
    waits = [float(w) for w in re.findall(r"in ([\d.]+) s", caplog.text)]
    assert len(waits) == 2 and all(w <= 0.004 for w in waits)


def test_a_failed_batch_wakes_requests_waiting_to_retry(server):
    """`a` waits a 600 s backoff before its retry; `b`'s 401 stops the batch, so `a` is never resent."""
    errors = []
    thread = threading.Thread(
        target=lambda: errors.append(
            failure(
                server,
                {"a": ["status 503", "ok"], "b": ["late status 401"]},
                concurrency=2,
                max_retries=1,
                backoff_initial=600,
                backoff_max=600,
            )
        )
    )
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and errors == [
        f"judge server {server.url}/chat/completions answered HTTP 401: refused, you sent Bearer ***"
    ]
    assert server.seen == {"a": 1, "b": 1}


def test_circuit_breaker_trips_and_sends_nothing_more(server):
    script = {f"p{i}": ["status 503"] for i in range(5)}
    message = failure(server, script, max_retries=10, max_consecutive_failures=4)
    assert server.seen == {"p0": 4}
    url = server.url + "/chat/completions"
    assert (
        message
        == f"judge server {url} failed 4 attempts in a row (last: HTTP 503); 0/5 requests of this batch done, 4 attempts sent; the circuit breaker (max_consecutive_failures) stopped the stage"
    )


def test_circuit_breaker_counts_failures_in_a_row_only(server):
    texts = generate(
        server,
        {"a": ["status 503", "status 503", "ok"], "b": ["drop", "status 500", "ok"]},
        max_retries=5,
        max_consecutive_failures=3,
    )
    assert texts == ["judged a", "judged b"]
    assert server.seen == {"a": 3, "b": 3}


def test_circuit_breaker_under_concurrency(server):
    script = {f"p{i}": ["status 503"] for i in range(12)}
    message = failure(server, script, concurrency=4, max_retries=10, max_consecutive_failures=6)
    sent = sum(server.seen.values())
    assert 6 <= sent <= 6 + 3  # the threshold, plus attempts already in flight on the other 3 workers
    assert (
        message.startswith(f"judge server {server.url}/chat/completions failed ")
        and "in a row (last: HTTP 503); 0/12 requests" in message
    )
    assert f"{sent} attempts sent" in message


def test_backoff_max_below_backoff_initial_is_a_config_error(server):
    with pytest.raises(
        SelfRewardError, match=r"^config error: eval\.judge: .*backoff_max \(0\.5\) is below backoff_initial \(2\.0\)"
    ):
        engine_for(server, backoff_initial=2, backoff_max=0.5)
