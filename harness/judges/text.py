"""Text helpers for judging: what of a model's answer a judge should see."""

from __future__ import annotations

import re


def strip_reasoning(text: str, tags: tuple[str, ...] = ("think", "reasoning")) -> str:
    """The answer without reasoning blocks: `<think>...</think>` removed; an unclosed opening tag drops
    everything after it; a closing tag with no opening one (the template opened it) drops everything before it."""
    for tag in tags:
        t = re.escape(tag)
        text = re.sub(rf"<{t}\b[^>]*>.*?</{t}\s*>\s*", "", text, flags=re.DOTALL | re.IGNORECASE)
        opened = re.search(rf"<{t}\b[^>]*>", text, flags=re.IGNORECASE)
        if opened:
            text = text[:opened.start()]
        closed = list(re.finditer(rf"</{t}\s*>\s*", text, flags=re.IGNORECASE))
        if closed:
            text = text[closed[-1].end():]
    return text
