"""The OpenAI-endpoint backend against a local stub: retries, timeouts, malformed answers, the API key."""

from __future__ import annotations

import logging

import httpx
import pytest

from fusion.common.errors import FusevalError
from harness.backends import ChatRequest, GenParams, OpenAIBackend, OpenAIOptions, make_backend


def backend(url: str, **kw) -> OpenAIBackend:
    opts = {"base_url": url, "model": "stub", "backoff_s": 0.01, "max_retries": 2, "timeout_s": 5.0, **kw}
    return OpenAIBackend(OpenAIOptions(**opts))


def ask(b: OpenAIBackend, *texts: str):
    return b.generate([ChatRequest([{"role": "user", "content": t}], GenParams(max_new_tokens=8)) for t in texts])


def test_answers_in_order_with_usage_and_latency(stub):
    url, state = stub
    with backend(url, concurrency=4) as b:
        res = ask(b, *[f"echo {i}" for i in range(20)])
    assert [r.text for r in res] == [f"echo {i}" for i in range(20)]
    assert all(r.ok and r.attempts == 1 and r.latency_s > 0 and r.completion_tokens == 2 for r in res)
    assert state.requests == 20


def test_transient_errors_are_retried_with_backoff(stub):
    url, state = stub
    with backend(url) as b:
        ok, gone = ask(b, "flaky:2 a", "flaky:5 b")
    assert ok.ok and ok.text == "flaky:2 a" and ok.attempts == 3
    assert not gone.ok and gone.attempts == 3 and "HTTP 503" in gone.error  # 1 try + 2 retries, then give up
    assert state.attempts["flaky:5 b"] == 3


@pytest.mark.parametrize("text, expect, attempts", [
    ("status:400 x", "HTTP 400", 1),     # a client error is not retried
    ("status:401 x", "HTTP 401", 1),
    ("status:429 x", "HTTP 429", 3),     # rate limited: retried
    ("badjson x", "malformed response", 3),
    ("nochoices x", "malformed response", 3),
])
def test_failures_come_back_as_errors(stub, text, expect, attempts):
    url, state = stub
    with backend(url) as b:
        (r,) = ask(b, text)
    assert r.text is None and expect in r.error and r.attempts == attempts
    assert state.attempts[text] == attempts


def test_per_request_timeout(stub):
    url, _ = stub
    with backend(url, timeout_s=0.3, max_retries=1) as b:
        slow, fast = ask(b, "slow:2 x", "echo y")
    assert not slow.ok and "timed out after 0.3 s" in slow.error and slow.attempts == 2
    assert fast.ok


def test_a_huge_answer_is_kept_whole(stub):
    url, _ = stub
    with backend(url) as b:
        (r,) = ask(b, "huge")
    assert r.ok and len(r.text) == 1_000_000


def test_unreachable_endpoint_is_an_error_not_a_crash():
    with socket_port() as port:
        pass  # the port is now closed: nothing listens there
    with backend(f"http://127.0.0.1:{port}/v1", max_retries=1) as b:
        (r,) = ask(b, "echo")
    assert not r.ok and "cannot reach" in r.error


def test_api_key_from_env_sent_but_never_shown(stub, monkeypatch, caplog):
    url, state = stub
    key = "sk-test-fuseval-0123456789"
    monkeypatch.setenv("FUSEVAL_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)
    b = backend(url, api_key_env="FUSEVAL_TEST_KEY", max_retries=0)
    with b:
        res = ask(b, "echo hi", f"status:400 {key}")  # the stub echoes the message, key included, in its error
    assert state.auth == [f"Bearer {key}"] * 2
    assert res[0].ok and key not in res[1].error and "***" in res[1].error
    assert key not in repr(b) and key not in caplog.text


def test_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("FUSEVAL_NO_SUCH_KEY", raising=False)
    b = backend("http://127.0.0.1:9/v1", api_key_env="FUSEVAL_NO_SUCH_KEY")
    with pytest.raises(FusevalError, match="FUSEVAL_NO_SUCH_KEY.*not set"):
        b.start()


def test_make_backend_rejects_unknown_options():
    with pytest.raises(FusevalError, match="unknown key 'temprature'"):
        make_backend("openai", "m", {"base_url": "http://127.0.0.1:1/v1", "temprature": 1})
    with pytest.raises(FusevalError, match="unknown backend 'tgi'"):
        make_backend("tgi", "m")


class socket_port:
    def __enter__(self) -> int:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc):
        self.s.close()


def test_stub_is_local_only(stub):
    url, _ = stub
    assert url.startswith("http://127.0.0.1:")
    assert httpx.get(url.replace("/v1", "/health")).status_code == 200
