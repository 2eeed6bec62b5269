"""Chat conversations, the training data of fusion: one record per conversation in a JSONL file.

    convs = load_conversations("fusion.jsonl")     # {"messages": [{"role", "content"}, ...]} per line
    examples = encode_conversations(tok, convs)    # gold-label training examples (fusion.train.Example)
    save_conversations(convs, "copy.jsonl")

`domain`, `qid`, `answers` and `noisy` are optional: the tiny world fills them (fusion/zoo/domains.py),
a user's data usually has only `messages`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fusion.chat import encode_chat
from fusion.common.errors import FusevalError
from fusion.common.files import atomic_write_text
from fusion.train import Example


@dataclass(frozen=True)
class Conversation:
    """One conversation: the chat messages and, where known, the exact answer core of each assistant turn."""

    domain: str
    qid: str
    messages: list[dict] = field(hash=False)
    answers: list[str] = field(hash=False)
    noisy: bool = False  # the answers are the domain's plausible wrong ones (see `zoo.domains.generate(noise=...)`)

    def prompt_turns(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "user"]


def encode_conversations(tok, convs: list[Conversation]) -> list[Example]:
    """Tokenized training examples of conversations, gold labels only."""
    out = []
    for c in convs:
        ids, resp, _ = encode_chat(tok, c.messages)
        out.append(Example(ids, resp))
    return out


def save_conversations(convs: list[Conversation], path: str | Path) -> None:
    atomic_write_text(path, "".join(json.dumps({"qid": c.qid, "domain": c.domain, "messages": c.messages,
                                                "answers": c.answers, "noisy": c.noisy}) + "\n" for c in convs))


def _record(path: str | Path, n: int, line: str) -> Conversation:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise FusevalError(f"{path}:{n}: not a conversation record (invalid JSON: {e.msg})") from None
    msgs = d.get("messages") if isinstance(d, dict) else None
    if not (isinstance(msgs, list) and msgs and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in msgs)):
        raise FusevalError(f"{path}:{n}: not a conversation record ('messages' must be a non-empty list of "
                           "{role, content} objects)")
    return Conversation(d.get("domain", ""), str(d.get("qid", n)), msgs, d.get("answers", []),
                        bool(d.get("noisy", False)))


def load_conversations(path: str | Path) -> list[Conversation]:
    """Conversations of a JSONL file; a bad line is a one-line error naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FusevalError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FusevalError(f"{path}: cannot read conversations ({e.__class__.__name__})") from None
    return [_record(path, n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
