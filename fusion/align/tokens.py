"""Token text: the bytes a token stands for, whatever its tokenizer family (DESIGN.md section 2.3).

Tokens from different families are compared by the bytes they stand for, held as a str with one
character per byte (bytes decoded as latin-1): byte-level (GPT-2 family) tokens map back through
the GPT-2 bytes-to-unicode table (`Ġ` a space, `Ċ` a newline), SentencePiece tokens turn `▁` into
a space and `<0xNN>` byte-fallback pieces into that byte. Special and other added tokens (`<s>`,
`<|end|>`) stand for no text: `normalize_token` gives None for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Container

from fusion.common.errors import FusevalError

KINDS = ("byte_level", "sentencepiece")
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _gpt2_byte_chars() -> list[str]:
    """The GPT-2 bytes-to-unicode table: printable bytes stand for themselves, the rest for 256 + n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


# str.translate table: byte-level character -> the latin-1 character of its byte.
_FROM_BYTE_LEVEL = {ord(c): chr(b) for b, c in enumerate(_gpt2_byte_chars())}


def _utf8_as_latin1(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def normalize_token(token: str, kind: str, specials: Container[str] = ()) -> str | None:
    """The bytes `token` stands for, one character per byte; None for a special or empty token."""
    if token in specials:
        return None
    if kind == "byte_level":
        text = token.translate(_FROM_BYTE_LEVEL)
        if not text.isascii() and max(text) > "\xff":  # a character outside the table: take its UTF-8
            text = "".join(c if c <= "\xff" else _utf8_as_latin1(c) for c in text)
    elif kind == "sentencepiece":
        if is_byte_piece(token):
            text = chr(int(token[3:5], 16))
        else:
            text = token.replace("\u2581", " ")
            if not text.isascii():
                text = _utf8_as_latin1(text)
    else:
        raise FusevalError(f"unknown token kind {kind!r}; expected one of {', '.join(KINDS)}")
    return text or None


def is_byte_piece(token: str) -> bool:
    """Whether `token` is a SentencePiece byte-fallback piece (`<0x0A>`)."""
    return token.startswith("<0x") and _BYTE_PIECE.fullmatch(token) is not None


def heuristic_text(token: str) -> str:
    """Token text without knowing its family: markers to whitespace, `<0xNN>` to its byte."""
    if is_byte_piece(token):
        return chr(int(token[3:5], 16))
    return token.replace("\u0120", " ").replace("\u2581", " ").replace("\u010a", "\n")


def _component_types(node: object) -> set[str]:
    """Every "type" named in a serialized tokenizers component, nested Sequences included."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("type"), str):
            found.add(node["type"])
        for value in node.values():
            found |= _component_types(value)
    elif isinstance(node, list):
        for value in node:
            found |= _component_types(value)
    return found


def _component(backend, name: str) -> object:
    """One serialized component of a tokenizers.Tokenizer (its pre-tokenizer, decoder, normalizer), or None.
    Read component by component: serializing the whole tokenizer (`to_str`) costs ~0.5 s on a 150k vocabulary."""
    part = getattr(backend, name, None)
    return None if part is None else json.loads(part.__getstate__())


def _byte_fallback(model) -> bool:
    """Whether a tokenizers model falls back to `<0xNN>` pieces (Unigram has no attribute for it: read its state)."""
    flag = getattr(model, "byte_fallback", None)
    return bool(json.loads(model.__getstate__()).get("byte_fallback") if flag is None else flag)


def token_kind(tokenizer) -> str:
    """"byte_level" or "sentencepiece", read from a fast tokenizer's pre-tokenizer, decoder and model."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "to_str"):
        raise FusevalError(f"{type(tokenizer).__name__}: need a fast (tokenizers-backed) tokenizer to tell its kind")
    pipeline = _component_types([_component(backend, "pre_tokenizer"), _component(backend, "decoder")])
    if "ByteLevel" in pipeline:
        return "byte_level"
    if "Metaspace" in pipeline or _byte_fallback(backend.model) or "\u2581" in json.dumps(
            _component(backend, "normalizer"), ensure_ascii=False):
        return "sentencepiece"
    vocab = tokenizer.get_vocab()
    if sum("\u2581" in t for t in vocab) > 0.05 * len(vocab):
        return "sentencepiece"
    if sum("\u0120" in t for t in vocab) > 0.05 * len(vocab):
        return "byte_level"
    raise FusevalError(f"{type(tokenizer).__name__}: cannot tell whether the tokenizer is byte-level or "
                       f"SentencePiece (pre-tokenizer/decoder types: {sorted(pipeline) or 'none'})")


def special_tokens(tokenizer) -> set[str]:
    """Added and special tokens: they stand for no text."""
    added = {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    return added | set(tokenizer.all_special_tokens)
