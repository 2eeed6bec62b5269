"""Sequence alignment: DTW between two tokenizations of one text, and top-K rows moved across it.

    path = dtw_align(source_tokens, target_tokens)                      # [(j, i), ...] monotone
    pairs = one_to_one_pairs(path, source_texts, target_texts)          # same text, 1:1 only
    ids, logprobs, ok = transfer_topk(src_ids, src_logprobs, vmap, pairs, target_gold)

Shift convention. Row t of a distribution array ([T, K] ids and log-probabilities) is a model's
distribution FOR token t, i.e. predicting token t from tokens < t; a causal LM's logits at
position t - 1 give row t. So a source token j paired one-to-one with target token i, both
standing for the same text, hands its row j to target row i. Rows without such a pair get the
one-hot of the target's gold token i (the token that row predicts, not the token before it).
In a transferred [T, K] id array, -1 is padding with log-prob -inf.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numba
import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fusion.align.tokens import heuristic_text, normalize_token
from fusion.common.errors import FusevalError


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
        return [heuristic_text(t) for t in tokens]
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
