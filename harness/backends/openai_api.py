"""Any OpenAI-compatible chat endpoint (vLLM, a hosted API, a local stub), over HTTP.

    b = OpenAIBackend(OpenAIOptions(base_url="http://127.0.0.1:8000/v1", model="m", api_key_env="MY_KEY"))

Requests run on a bounded thread pool. Transient failures (connection errors, timeouts, 408/409/429
and 5xx, a body that is not the JSON we expect) are retried with exponential backoff and jitter;
other 4xx answers fail at once. The API key is read from the environment variable the options
name; it is sent only in the Authorization header and is removed from every error message.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx
from pydantic import BaseModel, ConfigDict, Field

from fusion.common.errors import FusevalError
from harness.backends.base import Backend, ChatRequest, ChatResult, TokenLogprob

TRANSIENT_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIOptions(BaseModel):
    """Where the endpoint is and how hard to try."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="The API root, e.g. http://127.0.0.1:8000/v1.")
    model: str = Field(description="The model name the endpoint serves.")
    api_key_env: str | None = Field(None, description="Name of the environment variable holding the API key.")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(300.0, gt=0, description="Per-request timeout (one attempt).")
    max_retries: int = Field(3, ge=0, description="Retries of a transient failure.")
    backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles each retry, with jitter.")
    extra_body: dict = Field(default_factory=dict, description="Extra JSON fields for every request.")
    structured_output: bool = Field(True, description="The endpoint accepts `response_format` JSON schemas "
                                    "(vLLM and OpenAI do); judges then request structured verdicts.")


class _Failure(Exception):
    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class OpenAIBackend(Backend):
    """Chat completions against an OpenAI-compatible server."""

    kind = "openai"

    def __init__(self, options: OpenAIOptions, model_id: str | None = None,
                 is_alive: Callable[[], bool] | None = None):
        self.options = options
        self.model_id = model_id or options.model
        # Asked after a transient failure: when the server is known dead, stop retrying at once.
        self.is_alive = is_alive
        self.supports_json_schema = options.structured_output
        self._key: str | None = None
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(base_url={self.options.base_url!r}, model={self.options.model!r})"

    def start(self) -> None:
        o = self.options
        if o.api_key_env:
            self._key = os.environ.get(o.api_key_env)
            if not self._key:
                raise FusevalError(f"environment variable {o.api_key_env} (the API key for {o.base_url}) is not set")
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        limits = httpx.Limits(max_connections=o.concurrency, max_keepalive_connections=o.concurrency)
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(base_url=o.base_url.rstrip("/") + "/", headers=headers, limits=limits,
                                            timeout=httpx.Timeout(o.timeout_s, connect=min(o.timeout_s, 10.0)))

    def stop(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _body(self, req: ChatRequest) -> dict:
        p = req.params
        body = {"model": self.options.model, "messages": req.messages, "temperature": p.temperature,
                "top_p": p.top_p, "max_tokens": p.max_new_tokens, **self.options.extra_body}
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        if p.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = p.logprobs
        if p.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": p.json_schema, "strict": True}}
        return body

    def _once(self, body: dict) -> ChatResult:
        try:
            resp = self._client.post("chat/completions", json=body)
        except httpx.TimeoutException:
            raise _Failure(f"timed out after {self.options.timeout_s:g} s", True) from None
        except httpx.TransportError as e:
            raise _Failure(f"cannot reach {self.options.base_url} ({e.__class__.__name__}: {e})", True) from None
        if resp.status_code != 200:
            # Redacted before it is cut: a key cut in two would no longer match and half of it would show.
            raise _Failure(f"HTTP {resp.status_code}: {self.redact(resp.text)[:300].strip()}",
                           resp.status_code in TRANSIENT_STATUS)
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise _Failure(f"malformed response ({e.__class__.__name__}: {e}): {self.redact(resp.text)[:200]!r}",
                           True) from None
        usage = data.get("usage") or {}
        return ChatResult(text=text, finish_reason=choice.get("finish_reason"),
                          prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
                          logprobs=_logprobs(choice))

    def _request(self, req: ChatRequest) -> ChatResult:
        body = self._body(req)
        t0 = time.perf_counter()
        o = self.options
        for attempt in range(1, o.max_retries + 2):
            try:
                r = self._once(body)
                r.latency_s, r.attempts = time.perf_counter() - t0, attempt
                return r
            except _Failure as f:
                last = f
                dead = self.is_alive is not None and not self.is_alive()
                if not f.transient or dead or attempt > o.max_retries:
                    break
                time.sleep(o.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random()))
        msg = self.redact(str(last)) + (" (server is down)" if dead else "")
        return ChatResult(text=None, error=msg, latency_s=time.perf_counter() - t0, attempts=attempt)

    def generate(self, requests: list[ChatRequest], on_done: Callable[[int], None] | None = None) -> list[ChatResult]:
        self.start()
        results: list[ChatResult | None] = [None] * len(requests)
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="fuseval-http") as pool:
            futures = {pool.submit(self._request, r): i for i, r in enumerate(requests)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if on_done:
                    on_done(1)
        return results


def _logprobs(choice: dict) -> list[TokenLogprob] | None:
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    return [TokenLogprob(c["token"], c["logprob"], {t["token"]: t["logprob"] for t in c.get("top_logprobs") or []})
            for c in content]
