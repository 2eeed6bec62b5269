"""Backends that serve a model: `vllm` (a server we start), `transformers` (in process), `openai` (an endpoint).

    with make_backend("vllm", "path/to/model", {"max_model_len": 2048}) as b:
        results = b.generate(requests)

`default_backend()` is vllm where it is installed and transformers otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fusion.common.configfile import validation_message
from fusion.common.errors import FusevalError
from harness.backends.base import Backend, ChatRequest, ChatResult, GenParams, TokenLogprob
from harness.backends.hf import TransformersBackend, TransformersOptions, load_chat_tokenizer
from harness.backends.openai_api import OpenAIBackend, OpenAIOptions
from harness.backends.vllm_server import VLLMBackend, VLLMOptions, vllm_available

KINDS = ("vllm", "transformers", "openai")

__all__ = ["KINDS", "Backend", "ChatRequest", "ChatResult", "GenParams", "OpenAIBackend", "OpenAIOptions",
           "TokenLogprob", "TransformersBackend", "TransformersOptions", "VLLMBackend", "VLLMOptions",
           "default_backend", "load_chat_tokenizer", "make_backend", "vllm_available"]


def default_backend() -> str:
    return "vllm" if vllm_available() else "transformers"


def make_backend(kind: str, model: str | Path, options: dict[str, Any] | None = None, *, model_id: str | None = None,
                 log_dir: str | Path = "runs/logs", where: str = "backend options") -> Backend:
    """A backend by name. `model` is a model directory (vllm, transformers) or the served name (openai)."""
    options = dict(options or {})
    try:
        if kind == "vllm":
            return VLLMBackend(model, VLLMOptions(**options), log_dir=log_dir, model_id=model_id)
        if kind == "transformers":
            return TransformersBackend(model, TransformersOptions(**options), model_id=model_id)
        if kind == "openai":
            return OpenAIBackend(OpenAIOptions(model=str(model), **options), model_id=model_id)
    except ValidationError as e:
        raise FusevalError(validation_message(where, e)) from None
    raise FusevalError(f"unknown backend {kind!r}; choose from {', '.join(KINDS)}")
