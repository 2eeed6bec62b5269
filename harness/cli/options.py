"""Command-line values that several commands read: byte sizes, KEY=VALUE backend options, the store path."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from fusion.common.errors import FusevalError
from harness.run.resolve import backend_options as _with_endpoint

STORE_HELP = "The run store (SQLite); created if missing."
STORE = typer.Option(Path("runs/fuseval.db"), "--store", help="The run store (SQLite).")

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse a byte size: 5GB, 500MB, 2GiB, 1e9 or plain bytes (decimal units, as Hugging Face uses)."""
    m = _SIZE_RE.match(text)
    if not m:
        try:
            return int(float(text))
        except ValueError:
            raise FusevalError(f"cannot read size {text!r}; write e.g. 5GB, 500MB or a number of bytes") from None
    value, unit, suffix = float(m.group(1)), m.group(2).upper(), (m.group(3) or "").upper()
    base = 1024 if suffix == "IB" else 1000
    return int(value * base ** " KMGT".index(unit or " "))


def parse_options(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FusevalError(f"--option {item!r}: write KEY=VALUE, e.g. max_model_len=2048")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else ""
    return out


def backend_options(kind: str, option: list[str], base_url: str | None = None, api_key_env: str | None = None,
                    chat_template: Path | None = None, concurrency: int | None = None, device: str | None = None,
                    flag: str = "--") -> dict:
    """Backend options from the command line's flags, checked against the backend they apply to."""
    opts = _with_endpoint(kind, parse_options(option), base_url, api_key_env, prefix=flag, url_key="base-url")
    if kind == "openai" and chat_template:
        raise FusevalError("--chat-template does not apply to an openai backend: the endpoint applies its own "
                           "template")
    if kind != "openai" and (base_url or api_key_env):
        raise FusevalError(f"{flag}base-url and {flag}api-key-env apply to {flag}backend openai only")
    if chat_template and not chat_template.is_file():
        raise FusevalError(f"{chat_template}: no such chat template file")
    if chat_template:
        opts["chat_template"] = chat_template
    if concurrency and kind != "transformers":
        opts["concurrency"] = concurrency
    if device:
        if kind != "transformers":
            raise FusevalError(f"{flag}device applies to {flag}backend transformers (vLLM picks its own device)")
        opts["device"] = device
    return opts


