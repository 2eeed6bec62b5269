"""Chats as token sequences: the chat template applied, response tokens located, greedy answers.

    ids, resp = encode_chat(tokenizer, messages)           # resp: indices of assistant tokens
    texts = greedy_answers(model, tokenizer, [messages[:1], ...])

A response token is one whose text lies inside an assistant message as the template renders it,
the end-of-turn marker included (the model must learn to stop). Tokens are located by character
offsets, so this works for any fast tokenizer and any template that renders a conversation as
a prefix of its continuation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from fusion.common.errors import FusevalError
from fusion.common.files import atomic_write_text

log = logging.getLogger(__name__)


def require_template(tokenizer, where: str = "") -> None:
    if not getattr(tokenizer, "chat_template", None):
        name = where or getattr(tokenizer, "name_or_path", "") or "tokenizer"
        raise FusevalError(f"{name}: tokenizer has no chat template (set chat_template in tokenizer_config.json)")


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the prompt for the assistant's next turn: the template, its generation prompt added."""
    return tokenizer(render(tokenizer, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def response_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the [start, end) character span of each assistant message in it."""
    require_template(tokenizer)
    full = render(tokenizer, messages)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(tokenizer, messages[:k], add_generation_prompt=True)
        upto = render(tokenizer, messages[:k + 1])
        if not (upto.startswith(prefix) and full.startswith(upto)):
            raise FusevalError(f"{tokenizer.name_or_path}: the chat template does not render a conversation "
                               "as a prefix of its continuation; cannot locate response tokens")
        end = len(upto.rstrip())
        spans.append((len(prefix), end))
    return full, spans


def encode_chat(tokenizer, messages: list[dict]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(input_ids, response token indices, response token indices per assistant turn)."""
    full, spans = response_spans(tokenizer, messages)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    starts = np.asarray([s for s, _ in enc["offset_mapping"]], dtype=np.int64)
    per_turn = [np.flatnonzero((starts >= lo) & (starts < hi)) for lo, hi in spans]
    for t, idx in enumerate(per_turn):
        if len(idx) == 0 and spans[t][1] > spans[t][0]:
            raise FusevalError(f"{tokenizer.name_or_path}: no token starts inside assistant turn {t + 1}")
    resp = np.concatenate(per_turn) if per_turn else np.zeros(0, np.int64)
    return ids, resp, per_turn


def end_token_ids(tokenizer) -> list[int]:
    """Ids that end an assistant turn: the template's end-of-turn marker(s) and eos."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for tok in ("<|end|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        i = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(i, int) and i != tokenizer.unk_token_id and i is not None and i >= 0:
            ids.add(i)
    return sorted(ids)


@torch.no_grad()
def greedy_answers(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 32,
                   batch_size: int = 32) -> list[str]:
    """Greedy continuation of each conversation (ending with a user turn) as the assistant."""
    require_template(tokenizer)
    stops = end_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = next(model.parameters()).device
    out: list[str] = []
    for i in range(0, len(conversations), batch_size):
        prompts = [prompt_ids(tokenizer, c) for c in conversations[i:i + batch_size]]
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, p in enumerate(prompts):  # left padding, so every row continues at the same column
            ids[b, width - len(p):] = torch.tensor(p)
            mask[b, width - len(p):] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad)
        for row in gen[:, width:].tolist():
            cut = next((j for j, t in enumerate(row) if t in stops), len(row))
            out.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return out


def answer_two_turns(model, tokenizer, turns: list[list[str]], **kw) -> list[list[str]]:
    """Answer multi-turn questions turn by turn; each later turn sees the model's own earlier answers."""
    histories: list[list[dict]] = [[] for _ in turns]
    answers: list[list[str]] = [[] for _ in turns]
    for t in range(max(map(len, turns))):
        idx = [i for i, q in enumerate(turns) if t < len(q)]
        for i in idx:
            histories[i].append({"role": "user", "content": turns[i][t]})
        texts = greedy_answers(model, tokenizer, [histories[i] for i in idx], **kw)
        for i, text in zip(idx, texts):
            histories[i].append({"role": "assistant", "content": text})
            answers[i].append(text)
    return answers


def load_tokenizer(path: str | Path):
    """The tokenizer saved in a model directory, exactly as its tokenizer.json defines it.

    transformers 5 replaces the saved pre-tokenizer/decoder with its own for some model types
    (e.g. any qwen2 checkpoint gets the Qwen2 byte-level pipeline). When the loaded tokenizer
    does not tokenize a probe text as tokenizer.json does, load tokenizer.json as it is instead.
    """
    from tokenizers import Tokenizer

    path = Path(path)
    raw_file = path / "tokenizer.json"
    raw = None
    if raw_file.exists():  # parsed first: transformers' own errors on a broken file are tracebacks
        try:
            raw = Tokenizer.from_file(str(raw_file))
        except Exception as e:  # tokenizers raises a bare Exception for any file it cannot read
            reason = str(e).partition("\n")[0]
            raise FusevalError(f"{raw_file}: not a valid tokenizer file ({reason})") from None
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise FusevalError(f"{path}: cannot load tokenizer ({e})") from None
    if raw is not None:
        probe = "Hello world, 12 + 30 = 42.\nNaïve café: ünïcödé"
        if raw.encode(probe, add_special_tokens=False).ids != tok(probe, add_special_tokens=False)["input_ids"]:
            log.warning("%s: AutoTokenizer (%s) tokenizes differently from tokenizer.json; using tokenizer.json",
                        path, type(tok).__name__)
            tok = PreTrainedTokenizerFast.from_pretrained(path)
    return tok


def write_generation_config(path: Path, tok) -> None:
    """generation_config.json for a model directory: greedy by default, every end token of the template."""
    atomic_write_text(Path(path) / "generation_config.json", json.dumps(
        {"bos_token_id": tok.bos_token_id, "eos_token_id": end_token_ids(tok), "pad_token_id": tok.pad_token_id,
         "do_sample": False}, indent=2) + "\n")
