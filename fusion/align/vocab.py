"""Vocabulary map from a source tokenizer to a target one (MinED), cached by both tokenizers' hashes.

    vmap = map_vocab(source_tok, target_tok, cache_dir="runs/cache")    # source id -> target id

A source token maps to the target token that stands for the same text (`fusion.align.tokens`; an
ordinary piece before a byte-fallback one, then the lowest id), else to the one with the least edit
distance (ties: shortest, then lowest id). Special tokens map
only to the target's token with the same content or, failing that, the same role
(bos/eos/pad/unk). -1 is a source id with no target counterpart (a special token with neither
content nor role in the target, or a token that stands for no bytes); its probability mass is
dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fusion.align.tokens import is_byte_piece, normalize_token, special_tokens, token_kind
from fusion.common.files import atomic_output_dir, atomic_write_text

log = logging.getLogger(__name__)

# Bump when the mapping rules change, so old cached maps are not reused. 2: an ordinary target piece wins
# an exact match over a byte-fallback piece of the same text (1 took the lowest id: `<0x41>` over `A`).
_CACHE_FORMAT = 2
_CDIST_CELLS = 16 * 2**20  # distances per rapidfuzz call: 64 MiB of int32, whatever the vocab sizes


def _vocab_list(tokenizer) -> list[str | None]:
    """Token string of every id in range(len(tokenizer)); None for ids without one."""
    tokens: list[str | None] = [None] * len(tokenizer)
    for token, idx in tokenizer.get_vocab().items():
        if idx < len(tokens):
            tokens[idx] = token
    return tokens


_ROLES = ("eos_token", "bos_token", "pad_token", "unk_token")


def _vocab_key(tokenizer, kind: str, specials: set[str]) -> str:
    """sha256 of everything the map depends on: (token, id) items, kind, special tokens and their roles."""
    items = sorted(tokenizer.get_vocab().items())
    roles = [getattr(tokenizer, role, None) for role in _ROLES]
    blob = json.dumps([items, kind, sorted(specials), roles, len(tokenizer)], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _map_specials(source, target, vmap: np.ndarray, src_tokens, src_specials, tgt_tokens, tgt_specials) -> None:
    """Source special -> target special with the same content, else the same role, else -1."""
    tgt_by_content: dict[str, int] = {}
    for idx, tok in enumerate(tgt_tokens):
        if tok in tgt_specials:
            tgt_by_content.setdefault(tok, idx)
    # Roles in the order of _ROLES, eos first: a token with several roles (GPT-2's <|endoftext|>,
    # a pad set to eos) ends texts in chat data.
    for idx, tok in enumerate(src_tokens):
        if tok is None or tok not in src_specials:
            continue
        if tok in tgt_by_content:
            vmap[idx] = tgt_by_content[tok]
            continue
        for role in _ROLES:
            mine, theirs = getattr(source, role, None), getattr(target, role, None)
            if mine == tok and theirs is not None and theirs in tgt_by_content:
                vmap[idx] = tgt_by_content[theirs]
                break


def _argmin_slice(queries: list[str], choices: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(index, distance) of the nearest choice to each query, first one on ties; chunked cdist."""
    pick = np.empty(len(queries), dtype=np.int64)
    dist = np.empty(len(queries), dtype=np.int64)
    step = max(1, _CDIST_CELLS // max(len(choices), 1))
    for start in range(0, len(queries), step):
        d = process.cdist(queries[start:start + step], choices, scorer=Levenshtein.distance,
                          dtype=np.int32, workers=-1)
        pick[start:start + step] = d.argmin(axis=1)
        dist[start:start + step] = d[np.arange(len(d)), pick[start:start + step]]
    return pick, dist


def _nearest(queries: list[str], choices: list[str]) -> np.ndarray:
    """Index of the choice with the least Levenshtein distance to each query, lowest index on ties.

    `choices` must be sorted by length. A choice whose length differs from the query's by r is at
    least r edits away, so the search grows in rings of length difference r = 0, 1, 2, ... and
    stops for a query once its best distance is <= r: no farther ring can reach it, or tie it. The
    longer side of ring r can only tie a best of r, and a tie goes to the shorter text: it is searched
    only for queries whose best is still above r.
    """
    lengths = np.array([len(c) for c in choices])
    qlen = np.array([len(q) for q in queries])
    pick = np.full(len(queries), len(choices), dtype=np.int64)
    best = np.full(len(queries), np.iinfo(np.int64).max, dtype=np.int64)
    active = np.arange(len(queries))
    for r in range(int(max(lengths.max(initial=0), qlen.max(initial=0))) + 1):
        for length in np.unique(qlen[active]).tolist():
            group = active[qlen[active] == length]
            for ring in sorted({length - r, length + r}):
                if ring > length:
                    group = group[best[group] > r]
                lo, hi = np.searchsorted(lengths, [ring, ring + 1])
                if lo == hi or not group.size:
                    continue
                p, d = _argmin_slice([queries[q] for q in group], choices[lo:hi])
                better = (d < best[group]) | ((d == best[group]) & (lo + p < pick[group]))
                pick[group[better]], best[group[better]] = lo + p[better], d[better]
        active = active[best[active] > r]
        if not active.size:
            break
    return pick


def _target_texts(tokens: list[str | None], kind: str, specials: set[str]) -> dict[str, int]:
    """Normalized text -> the target id that stands for it: an ordinary piece before a byte-fallback piece
    of the same text (Llama's `A` before `<0x41>`: the tokenizer emits a byte piece only for bytes that no
    ordinary piece covers, so a model gives it next to no probability), then the lowest id."""
    exact: dict[str, int] = {}
    fallback: dict[str, int] = {}
    for idx, tok in enumerate(tokens):
        text = None if tok is None else normalize_token(tok, kind, specials)
        if text is not None:
            (fallback if kind == "sentencepiece" and is_byte_piece(tok) else exact).setdefault(text, idx)
    for text, idx in fallback.items():
        exact.setdefault(text, idx)
    return exact


def _compute_map(source, target, src_kind: str, tgt_kind: str) -> np.ndarray:
    src_tokens, tgt_tokens = _vocab_list(source), _vocab_list(target)
    src_specials, tgt_specials = special_tokens(source), special_tokens(target)
    vmap = np.full(len(src_tokens), -1, dtype=np.int64)
    exact = _target_texts(tgt_tokens, tgt_kind, tgt_specials)
    src_texts = [None if t is None else normalize_token(t, src_kind, src_specials) for t in src_tokens]
    missing: dict[str, list[int]] = {}
    for idx, text in enumerate(src_texts):
        if text is None:
            continue
        if text in exact:
            vmap[idx] = exact[text]
        else:
            missing.setdefault(text, []).append(idx)
    if missing and exact:
        # Choices ordered by (length, id): the first minimum is then the shortest, lowest-id one.
        choices = sorted(exact, key=lambda t: (len(t), exact[t]))
        queries = list(missing)
        for text, pick in zip(queries, _nearest(queries, choices)):
            vmap[missing[text]] = exact[choices[pick]]
    _map_specials(source, target, vmap, src_tokens, src_specials, tgt_tokens, tgt_specials)
    log.info("vocab map %d -> %d ids: %d by nearest text, %d unmapped", len(src_tokens), len(tgt_tokens),
             sum(map(len, missing.values())), int((vmap < 0).sum()))
    return vmap


def map_vocab(source_tokenizer, target_tokenizer, cache_dir: str | Path | None = None) -> np.ndarray:
    """Target id for every source id (MinED: exact text match, else least edit distance); -1 if none."""
    src_kind, tgt_kind = token_kind(source_tokenizer), token_kind(target_tokenizer)
    if cache_dir is None:
        return _compute_map(source_tokenizer, target_tokenizer, src_kind, tgt_kind)
    key = hashlib.sha256("".join([
        str(_CACHE_FORMAT),
        _vocab_key(source_tokenizer, src_kind, special_tokens(source_tokenizer)),
        _vocab_key(target_tokenizer, tgt_kind, special_tokens(target_tokenizer)),
    ]).encode()).hexdigest()[:24]
    entry = Path(cache_dir) / f"vocab_map-{key}"
    if (entry / "map.npy").exists():
        vmap = np.load(entry / "map.npy")
        if vmap.shape == (len(source_tokenizer),):
            log.info("vocab map read from %s", entry)
            return vmap
    vmap = _compute_map(source_tokenizer, target_tokenizer, src_kind, tgt_kind)
    with atomic_output_dir(entry, force=True) as tmp:
        np.save(tmp / "map.npy", vmap)
        atomic_write_text(tmp / "meta.json", json.dumps({
            "format": _CACHE_FORMAT, "source_kind": src_kind, "target_kind": tgt_kind,
            "source_size": len(source_tokenizer), "target_size": len(target_tokenizer),
            "unmapped": int((vmap < 0).sum())}, indent=2) + "\n")
    return vmap
