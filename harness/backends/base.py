"""The one backend interface: requests in, results out, the server's life in a context manager.

    with make_backend("transformers", model="path/to/model") as b:
        r = b.chat([{"role": "user", "content": "Hi"}], GenParams(max_new_tokens=32))
        results = b.generate([ChatRequest(messages, params), ...], on_done=bar.advance)

A request that fails (timeout, server error, context too long) comes back as a result with `error`
set; `generate` raises only when the backend itself cannot go on (a server that will not start).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from fusion.common.errors import FusevalError


class GenParams(BaseModel):
    """How to sample one answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(0.0, ge=0.0, description="0 means greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(512, ge=1, description="Upper bound on generated tokens.")
    seed: int | None = Field(None, description="Sampling seed of this request (same seed, same answer).")
    logprobs: int | None = Field(None, ge=0, le=20, description="Return this many top log-probs per generated token.")
    stop: tuple[str, ...] = Field((), description="Extra stop strings (the chat template's end token always stops).")
    json_schema: dict | None = Field(None, description="Constrain the answer to this JSON schema "
                                     "(only on backends whose `supports_json_schema` is true).")


@dataclass
class ChatRequest:
    messages: list[dict]
    params: GenParams = field(default_factory=GenParams)


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: dict[str, float]  # the top-k alternatives at this position, token text -> log-prob


@dataclass
class ChatResult:
    """One answer, or the reason there is none."""

    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    attempts: int = 1
    logprobs: list[TokenLogprob] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# finish_reason of a request refused because its prompt already fills the context: permanent for this
# model, so generation records an empty answer for the turn instead of retrying it forever.
CONTEXT_FULL = "context_full"


def fit_to_context(prompt_tokens: int, params: GenParams, context: int) -> GenParams | ChatResult:
    """`params` with max_new_tokens cut to the room the prompt leaves, or a failed result if none is left."""
    room = context - prompt_tokens
    if room <= 0:
        return ChatResult(text=None, error=f"prompt of {prompt_tokens} tokens does not fit the model's context of "
                                           f"{context}",
                          finish_reason=CONTEXT_FULL)
    return params if params.max_new_tokens <= room else params.model_copy(update={"max_new_tokens": room})


def template_hash(template: str | None) -> str | None:
    """Short content hash of a chat template, recorded with every answer so a wrong one shows."""
    return hashlib.sha256(template.encode()).hexdigest()[:16] if template else None


class Backend(ABC):
    """Serves one model. Use as a context manager: it is always stopped, also on errors and Ctrl-C."""

    #: which kind of backend this is (make_backend's name for it); recorded with every answer
    kind: str = "backend"
    #: the name answers are filed under (FastChat's model_id)
    model_id: str
    #: sha256 (16 hex) of the chat template that renders the prompts, where we apply it ourselves
    chat_template_hash: str | None = None
    #: honours GenParams.json_schema (vLLM guided decoding, OpenAI structured outputs)
    supports_json_schema: bool = False

    def start(self) -> None:  # noqa: B027 (an optional hook: most backends have nothing to start)
        """Load the model or start the server; idempotent."""

    def stop(self) -> None:  # noqa: B027 (an optional hook)
        """Release the model or stop the server; idempotent, safe after a failed start."""

    @abstractmethod
    def generate(self, requests: list[ChatRequest], on_done: Callable[[int], None] | None = None) -> list[ChatResult]:
        """One result per request, in order; `on_done(1)` after each finishes (progress bars)."""

    def chat(self, messages: list[dict], params: GenParams | None = None) -> ChatResult:
        return self.generate([ChatRequest(messages, params or GenParams())])[0]

    def logprobs(self, messages: list[dict], top_k: int = 5, max_new_tokens: int = 16) -> list[TokenLogprob]:
        """Greedy continuation with the top-k log-probs of each generated token."""
        r = self.chat(messages, GenParams(max_new_tokens=max_new_tokens, logprobs=top_k))
        if not r.ok:
            raise FusevalError(f"{self.model_id}: {r.error}")
        return r.logprobs or []

    def __enter__(self) -> Backend:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
