"""Vocabulary mapping and token-sequence alignment for knowledge fusion (DESIGN.md section 2.3).

    vmap = map_vocab(source_tok, target_tok, cache_dir="runs/cache")    # source id -> target id
    path = dtw_align(source_tokens, target_tokens)                      # [(j, i), ...] monotone
    pairs = one_to_one_pairs(path, source_texts, target_texts)          # same text, 1:1 only
    ids, logprobs, ok = transfer_topk(src_ids, src_logprobs, vmap, pairs, target_gold)

Token text. Tokens from different families are compared by the bytes they stand for, held as a
str with one character per byte (bytes decoded as latin-1): byte-level (GPT-2 family) tokens map
back through the GPT-2 bytes-to-unicode table (`Ġ` a space, `Ċ` a newline), SentencePiece
tokens turn `▁` into a space and `<0xNN>` byte-fallback pieces into that byte. Special and other
added tokens (`<s>`, `<|end|>`) stand for no text: they never match ordinary tokens, and map only
to the target's token with the same content or, failing that, the same role (bos/eos/pad/unk).

Shift convention. Row t of a distribution array ([T, K] ids and log-probabilities) is a model's
distribution FOR token t, i.e. predicting token t from tokens < t; a causal LM's logits at
position t - 1 give row t. So a source token j paired one-to-one with target token i, both
standing for the same text, hands its row j to target row i. Rows without such a pair get the
one-hot of the target's gold token i (the token that row predicts, not the token before it).

What -1 means. In a vocabulary map, -1 is a source id with no target counterpart (a special
token with neither content nor role in the target, or a token that stands for no bytes); its
probability mass is dropped. In a transferred [T, K] id array, -1 is padding with log-prob -inf.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Container, Sequence
from pathlib import Path

import numba
import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fusion.common.errors import FusevalError
from fusion.common.files import atomic_output_dir, atomic_write_text

log = logging.getLogger(__name__)

KINDS = ("byte_level", "sentencepiece")
_CACHE_FORMAT = 1  # bump when the mapping rules change, so old cached maps are not reused
_CDIST_CELLS = 16 * 2**20  # distances per rapidfuzz call: 64 MiB of int32, whatever the vocab sizes
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
        m = _BYTE_PIECE.fullmatch(token)
        text = chr(int(m.group(1), 16)) if m else _utf8_as_latin1(token.replace("\u2581", " "))
    else:
        raise FusevalError(f"unknown token kind {kind!r}; expected one of {', '.join(KINDS)}")
    return text or None


def _heuristic_text(token: str) -> str:
    """Token text without knowing its family: markers to whitespace, `<0xNN>` to its byte."""
    m = _BYTE_PIECE.fullmatch(token)
    if m:
        return chr(int(m.group(1), 16))
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


def token_kind(tokenizer) -> str:
    """"byte_level" or "sentencepiece", read from a fast tokenizer's pre-tokenizer, decoder and model."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "to_str"):
        raise FusevalError(f"{type(tokenizer).__name__}: need a fast (tokenizers-backed) tokenizer to tell its kind")
    spec = json.loads(backend.to_str())
    pipeline = _component_types([spec.get("pre_tokenizer"), spec.get("decoder")])
    if "ByteLevel" in pipeline:
        return "byte_level"
    model = spec.get("model") or {}
    if "Metaspace" in pipeline or model.get("byte_fallback") or "\u2581" in json.dumps(spec.get("normalizer")):
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
    stops for a query once its best distance is <= r: no farther ring can reach it, or tie it.
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
                lo, hi = np.searchsorted(lengths, [ring, ring + 1])
                if lo == hi:
                    continue
                p, d = _argmin_slice([queries[q] for q in group], choices[lo:hi])
                better = (d < best[group]) | ((d == best[group]) & (lo + p < pick[group]))
                pick[group[better]], best[group[better]] = lo + p[better], d[better]
        active = active[best[active] > r]
        if not active.size:
            break
    return pick


def _compute_map(source, target, src_kind: str, tgt_kind: str) -> np.ndarray:
    src_tokens, tgt_tokens = _vocab_list(source), _vocab_list(target)
    src_specials, tgt_specials = special_tokens(source), special_tokens(target)
    vmap = np.full(len(src_tokens), -1, dtype=np.int64)
    exact: dict[str, int] = {}  # normalized text -> lowest target id
    for idx, tok in enumerate(tgt_tokens):
        text = None if tok is None else normalize_token(tok, tgt_kind, tgt_specials)
        if text is not None:
            exact.setdefault(text, idx)
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


@numba.njit(cache=True)
def _dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accumulate D over the int cost matrix [n, m] and backtrack from (n-1, m-1) to (0, 0)."""
    n, m = cost.shape
    big = np.iinfo(np.int64).max // 4  # "infinity" that cannot overflow when a cost is added
    acc = np.empty((n, m), dtype=np.int64)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                best = 0
            else:
                best = big
                if i > 0 and j > 0:
                    best = acc[i - 1, j - 1]
                if i > 0 and acc[i - 1, j] < best:
                    best = acc[i - 1, j]
                if j > 0 and acc[i, j - 1] < best:
                    best = acc[i, j - 1]
            acc[i, j] = cost[i, j] + best
    src = np.empty(n + m, dtype=np.int64)
    tgt = np.empty(n + m, dtype=np.int64)
    i, j, k = n - 1, m - 1, 0
    while True:
        src[k], tgt[k] = i, j
        k += 1
        if i == 0 and j == 0:
            break
        # Strict "<" in the order diagonal, up, left keeps the earlier one on ties.
        bi, bj, best = -1, -1, big
        if i > 0 and j > 0:
            bi, bj, best = i - 1, j - 1, acc[i - 1, j - 1]
        if i > 0 and acc[i - 1, j] < best:
            bi, bj, best = i - 1, j, acc[i - 1, j]
        if j > 0 and acc[i, j - 1] < best:
            bi, bj, best = i, j - 1, acc[i, j - 1]
        i, j = bi, bj
    return src[:k][::-1].copy(), tgt[:k][::-1].copy()


def _texts(tokens: Sequence[str], kind: str | None) -> list[str]:
    if kind is None:
        return [_heuristic_text(t) for t in tokens]
    return [normalize_token(t, kind) or "" for t in tokens]


def token_cost(source_texts: Sequence[str], target_texts: Sequence[str]) -> np.ndarray:
    """Levenshtein distance of every (source, target) text pair, int64 [n, m]."""
    return process.cdist(source_texts, target_texts, scorer=Levenshtein.distance, dtype=np.int64, workers=-1)


def dtw_path(cost: np.ndarray) -> list[tuple[int, int]]:
    """The DTW path [(row, column), ...] from (0, 0) to the last cell through an int cost matrix [n, m]."""
    cost = np.asarray(cost)
    if cost.ndim != 2 or not np.issubdtype(cost.dtype, np.integer):
        raise FusevalError(f"DTW needs a 2-D integer cost matrix, got {cost.dtype} {cost.shape}")
    if not cost.size:
        return []
    rows, cols = _dtw_path(np.ascontiguousarray(cost, dtype=np.int64))
    return list(zip(rows.tolist(), cols.tolist()))


def dtw_align(source_tokens: Sequence[str], target_tokens: Sequence[str],
              kinds: tuple[str, str] | None = None) -> list[tuple[int, int]]:
    """Monotone DTW path [(source_index, target_index), ...] between two tokenizations of one text.

    Without `kinds` the tokens' text is guessed (`Ġ`/`▁` a space, `Ċ` a newline, `<0xNN>` a byte);
    with kinds=(source_kind, target_kind) it comes from `normalize_token`.
    """
    if not source_tokens or not target_tokens:
        return []
    src_kind, tgt_kind = kinds if kinds is not None else (None, None)
    return dtw_path(token_cost(_texts(source_tokens, src_kind), _texts(target_tokens, tgt_kind)))


def one_to_one_pairs(path: Sequence[tuple[int, int]], source_texts: Sequence[str | None],
                     target_texts: Sequence[str | None], max_distance: int = 0) -> list[tuple[int, int]]:
    """Path pairs (j, i) whose source and target index occur once each and whose texts are within
    `max_distance` edits (0: the same text). A None text (a special token) never pairs."""
    src_count = Counter(j for j, _ in path)
    tgt_count = Counter(i for _, i in path)
    if not all(0 <= j < len(source_texts) for j in src_count) or not all(0 <= i < len(target_texts) for i in tgt_count):
        raise FusevalError(f"alignment path reaches past the texts ({len(source_texts)} source, "
                           f"{len(target_texts)} target)")
    pairs = []
    for j, i in path:
        if src_count[j] != 1 or tgt_count[i] != 1:
            continue
        a, b = source_texts[j], target_texts[i]
        if a is not None and b is not None and Levenshtein.distance(a, b, score_cutoff=max_distance) <= max_distance:
            pairs.append((j, i))
    return pairs


def transfer_topk(src_ids: np.ndarray, src_logprobs: np.ndarray, vocab_map: np.ndarray,
                  pairs: Sequence[tuple[int, int]], target_gold: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source top-K rows moved onto target positions and ids: (ids int64 [T_t, K], logprobs float32
    [T_t, K], transferred bool [T_t]). Rows without a pair, or whose every source id maps to -1, are
    the one-hot of their gold token; source entries with id -1 or log-prob -inf are padding."""
    src_ids, target_gold = np.asarray(src_ids), np.asarray(target_gold)
    if src_ids.ndim != 2 or src_ids.shape != np.shape(src_logprobs):
        raise FusevalError(f"source ids {src_ids.shape} and logprobs {np.shape(src_logprobs)} must both be [T, K]")
    n_src, k = src_ids.shape
    n_tgt = len(target_gold)
    pair_arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    js, rows = pair_arr[:, 0], pair_arr[:, 1]
    if len(js) and (js.min() < 0 or js.max() >= n_src or rows.min() < 0 or rows.max() >= n_tgt):
        raise FusevalError(f"pair index out of range: {n_src} source rows, {n_tgt} target rows")
    if len(np.unique(rows)) != len(rows):
        raise FusevalError("a target position appears in more than one pair; pass one-to-one pairs")
    if src_ids.size and (src_ids.max() >= len(vocab_map)):
        raise FusevalError(f"source id {int(src_ids.max())} outside the vocabulary map ({len(vocab_map)} ids)")

    out_ids = np.full((n_tgt, k), -1, dtype=np.int64)
    out_lp = np.full((n_tgt, k), -np.inf, dtype=np.float32)
    done = np.zeros(n_tgt, dtype=bool)

    # Flatten the paired entries [P, K]; drop padding (-1) and ids with no target counterpart.
    ids = src_ids[js]
    mapped = np.where(ids >= 0, vocab_map[np.maximum(ids, 0)], -1)
    lp = np.asarray(src_logprobs, dtype=np.float64)[js]
    keep = (mapped >= 0) & np.isfinite(lp)
    row, tid, lp = np.nonzero(keep)[0], mapped[keep], lp[keep]
    if len(row):
        # Sum the mass of entries landing on one (row, target id): log-sum-exp per group.
        order = np.lexsort((tid, row))
        row, tid, lp = row[order], tid[order], lp[order]
        start = np.r_[True, (row[1:] != row[:-1]) | (tid[1:] != tid[:-1])]
        first = np.flatnonzero(start)
        row_max = np.full(len(js), -np.inf)
        np.maximum.at(row_max, row, lp)
        mass = np.add.reduceat(np.exp(lp - row_max[row]), first)
        g_row, g_tid = row[first], tid[first]
        total = np.bincount(g_row, weights=mass, minlength=len(js))
        g_lp = np.log(mass) - np.log(total[g_row])  # renormalized over the kept entries
        # Descending log-prob within each row (ties: lower id first), then the rank in its row.
        order = np.lexsort((g_tid, -g_lp, g_row))
        g_row, g_tid, g_lp = g_row[order], g_tid[order], g_lp[order]
        rank = np.arange(len(g_row)) - np.searchsorted(g_row, g_row)  # < K: merging never adds entries
        out_ids[rows[g_row], rank] = g_tid
        out_lp[rows[g_row], rank] = g_lp
        done[rows[g_row]] = True

    gold_rows = np.flatnonzero(~done)
    out_ids[gold_rows, 0] = target_gold[gold_rows]
    out_lp[gold_rows, 0] = 0.0
    return out_ids, out_lp, done
