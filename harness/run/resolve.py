"""One set of rules, shared by the CLI and the suite runner: bench names, which judges grade, who the judge is.

    name = bench_name("zoo", resolve_bench("zoo"))                  # 'zoo'; a set by path: its directory's name
    judges_for("auto", questions)                                   # ['programmatic'] where questions carry checks
    label, ident = judge_identity(store, "transformers", "runs/judge")   # ('judge', 'judge@1a2b3c4d5e')
    opts = backend_options("openai", {}, base_url="http://127.0.0.1:8000/v1", api_key_env="KEY")

The judge's identity is part of every judgment's key: the same judge model (same weights, or the
same endpoint and served name) keeps its id across commands, so its judgments are reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from fusion.common.errors import FusevalError
from fusion.common.hashing import digest
from harness.formats.questions import BUILTIN, Question

JUDGE_CHOICES = ("auto", "programmatic", "llm", "both")


class _HashesModels(Protocol):
    def model_hash(self, path: str | Path) -> str: ...


def bench_name(ref: str, question_file: Path, name: str | None = None) -> str:
    """The name a question set is filed under: an explicit name, a built-in set's name, else its directory's."""
    return name or (ref if ref in BUILTIN else question_file.parent.name)


def judges_for(choice: str, questions: list[Question]) -> list[str]:
    """The judges a choice means: `auto` is programmatic where the questions carry checks, else the LLM judge."""
    if choice == "auto":
        return ["programmatic"] if any(q.checks for q in questions) else ["llm"]
    try:
        return {"programmatic": ["programmatic"], "llm": ["llm"], "both": ["programmatic", "llm"]}[choice]
    except KeyError:
        raise FusevalError(f"judge {choice!r}: choose {', '.join(JUDGE_CHOICES)}") from None


def endpoint_hash(base_url: str | None, model: str) -> str:
    """The content hash of a model served by an endpoint: its URL and served name (no weights to hash)."""
    return digest("endpoint", base_url, model)


def judge_identity(store: _HashesModels, kind: str, model: str, base_url: str | None = None,
                   name: str | None = None) -> tuple[str, str]:
    """(label, id) of an LLM judge: id is `label@` + the first 10 hex of its weights' (or endpoint's) hash."""
    if kind == "openai":
        label, ident = name or model, endpoint_hash(base_url, model)
    else:
        label, ident = name or Path(model).resolve().name, store.model_hash(model)
    return label, f"{label}@{ident[:10]}"


def backend_options(kind: str, options: dict[str, Any], base_url: str | None = None, api_key_env: str | None = None,
                    *, prefix: str = "", url_key: str = "base_url") -> dict[str, Any]:
    """A backend's options with the endpoint settings of an openai backend (which needs a base URL).

    `prefix` and `url_key` name the setting in errors as the user wrote it: `--judge-` and `base-url` on
    the command line, nothing and `base_url` in a suite."""
    opts = dict(options)
    if kind == "openai":
        if not base_url:
            raise FusevalError(f"{prefix}backend openai needs {prefix}{url_key}")
        opts.update(base_url=base_url, api_key_env=api_key_env)
    return opts
