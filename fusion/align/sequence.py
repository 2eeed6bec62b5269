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

import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fusion.align.tokens import heuristic_text, normalize_token
from fusion.common.errors import FusevalError

# Two tiers compute the same path. numba's compiled kernel is 130-200x a plain-Python DP, but importing and
# starting numba costs a process ~0.5 s with the kernel in numba's disk cache, ~1.1 s when it must compile
# (measured on 2 cores). The NumPy tier (one vectorized step per row) costs nothing to start and is 5-20x a
# Python DP, 10-35x slower than numba. Ski rental: alignments take the NumPy tier until they have spent what
# starting numba costs, then numba. A process never pays more than about twice what the better choice in
# hindsight would have cost, and a short one (a test, one CLI call) never starts numba at all.
_JIT_START_S = 0.5
_tiers: dict = {"numpy_s": 0.0, "jit": None}  # process-wide, as numba's own dispatcher cache is
_CDIST_THREADS_FROM = 1 << 17  # cells: below this, rapidfuzz's threads cost more than they save (measured)
# Token -> text per kind, remembered across calls (a pure function of its arguments): a fusion run aligns
# thousands of answers drawn from one small working vocabulary, and looking a text up is ~7x cheaper than
# normalizing it again. Bounded: cleared when it outgrows _TEXT_MEMO_SIZE entries.
_text_memo: dict[str | None, dict[str, str]] = {}
_TEXT_MEMO_SIZE = 1 << 18


def _dtw_kernel(ucost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DTW over the cost matrix ucost[rows][:, cols] [n, m], read in place; backtrack from (n-1, m-1) to (0, 0).
    Compiled by numba (`warm_up`); the NumPy tier `_dtw_numpy` follows the same recurrence and tie rule."""
    n, m = len(rows), len(cols)
    big = np.iinfo(np.int64).max // 4  # "infinity" that cannot overflow when a cost is added
    acc = np.empty((n, m), dtype=np.int64)
    crow = np.empty(m, dtype=np.int64)  # this row's costs, gathered once
    for i in range(n):
        urow = ucost[rows[i]]
        for j in range(m):
            crow[j] = urow[cols[j]]
        if i == 0:
            acc[0, 0] = crow[0]
            for j in range(1, m):
                acc[0, j] = acc[0, j - 1] + crow[j]
            continue
        # The running-minimum form of `_dtw_numpy`: two short dependency chains instead of one long one.
        above = acc[i - 1]
        run = crow[0] + above[0]
        acc[i, 0] = run
        total = crow[0]
        run -= total
        for j in range(1, m):
            total += crow[j]
            enter = crow[j] + min(above[j - 1], above[j]) - total
            if enter < run:
                run = enter
            acc[i, j] = run + total
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


def _dtw_numpy(ucost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_dtw_kernel` in NumPy, one vectorized step per row (same recurrence, same tie rule, same path).

    Row i: enter[j] = cost[i, j] + min(acc[i-1, j-1], acc[i-1, j]) is the best way into (i, j) from the
    row above; moving left along the row adds costs, so acc[i, j] = min over k <= j of enter[k] + cost[i, k+1..j]
    = S[j] + min over k <= j of (enter[k] - S[k]), with S the row's running sum: a running minimum.
    """
    n, m = len(rows), len(cols)
    acc = np.empty((n, m), dtype=np.int64)
    np.cumsum(ucost[rows[0]][cols], out=acc[0])
    enter = np.empty(m, dtype=np.int64)
    for i in range(1, n):
        crow = ucost[rows[i]][cols]
        above = acc[i - 1]
        enter[0] = above[0]
        np.minimum(above[1:], above[:-1], out=enter[1:])
        enter += crow
        running = np.cumsum(crow)
        np.minimum.accumulate(enter - running, out=acc[i])
        acc[i] += running
    i, j, path = n - 1, m - 1, [(n - 1, m - 1)]
    while i and j:  # the tie rule of `_dtw_kernel`: diagonal, then up, then left
        bi, bj, best = i - 1, j - 1, acc.item(i - 1, j - 1)
        if acc.item(i - 1, j) < best:
            bi, bj, best = i - 1, j, acc.item(i - 1, j)
        if acc.item(i, j - 1) < best:
            bi, bj = i, j - 1
        i, j = bi, bj
        path.append((i, j))
    path += [(r, 0) for r in range(i - 1, -1, -1)] + [(0, c) for c in range(j - 1, -1, -1)]
    src, tgt = np.array(path, dtype=np.int64)[::-1].T
    return src.copy(), tgt.copy()


def warm_up() -> None:
    """Start numba's DTW kernel now (read from its disk cache, or compiled); every later alignment takes it."""
    if _tiers["jit"] is None:
        import numba  # here, not at import: a process that aligns little never pays numba's start

        kernel = numba.njit(cache=True)(_dtw_kernel)
        one = np.zeros(1, dtype=np.int64)
        kernel(np.zeros((1, 1), dtype=np.int64), one, one)
        _tiers["jit"] = kernel


def _dtw(ucost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> list[tuple[int, int]]:
    """The DTW path through the cost matrix ucost[rows][:, cols], by the tier the ski rental picks."""
    if _tiers["jit"] is None and _tiers["numpy_s"] < _JIT_START_S:
        start = time.perf_counter()
        src, tgt = _dtw_numpy(ucost, rows, cols)
        _tiers["numpy_s"] += time.perf_counter() - start
    else:
        warm_up()
        src, tgt = _tiers["jit"](ucost, rows, cols)
    return list(zip(src.tolist(), tgt.tolist()))


def _unique_texts(tokens: Sequence[str], kind: str | None) -> tuple[list[str], np.ndarray]:
    """The text of each distinct token, and the index of every token's text [n]: real answers repeat
    tokens, so the cost matrix between distinct texts is several times smaller than the full one."""
    index: dict[str, int] = {}
    which = [index.setdefault(t, len(index)) for t in tokens]
    memo = _text_memo.setdefault(kind, {})
    if len(memo) > _TEXT_MEMO_SIZE:
        memo.clear()
    texts = []
    for token in index:
        text = memo.get(token)
        if text is None:
            text = memo[token] = heuristic_text(token) if kind is None else normalize_token(token, kind) or ""
        texts.append(text)
    return texts, np.array(which, dtype=np.int64)


def token_cost(source_texts: Sequence[str], target_texts: Sequence[str]) -> np.ndarray:
    """Levenshtein distance of every (source, target) text pair, int64 [n, m]."""
    workers = -1 if len(source_texts) * len(target_texts) >= _CDIST_THREADS_FROM else 1
    return process.cdist(source_texts, target_texts, scorer=Levenshtein.distance, dtype=np.int64, workers=workers)


def dtw_path(cost: np.ndarray) -> list[tuple[int, int]]:
    """The DTW path [(row, column), ...] from (0, 0) to the last cell through an int cost matrix [n, m]."""
    cost = np.asarray(cost)
    if cost.ndim != 2 or not np.issubdtype(cost.dtype, np.integer):
        raise FusevalError(f"DTW needs a 2-D integer cost matrix, got {cost.dtype} {cost.shape}")
    if not cost.size:
        return []
    n, m = cost.shape
    return _dtw(np.ascontiguousarray(cost, dtype=np.int64), np.arange(n, dtype=np.int64), np.arange(m, dtype=np.int64))


def dtw_align(source_tokens: Sequence[str], target_tokens: Sequence[str],
              kinds: tuple[str, str] | None = None) -> list[tuple[int, int]]:
    """Monotone DTW path [(source_index, target_index), ...] between two tokenizations of one text.

    Without `kinds` the tokens' text is guessed (`Ġ`/`▁` a space, `Ċ` a newline, `<0xNN>` a byte);
    with kinds=(source_kind, target_kind) it comes from `normalize_token`.
    """
    if not source_tokens or not target_tokens:
        return []
    src_kind, tgt_kind = kinds if kinds is not None else (None, None)
    s_texts, s_rows = _unique_texts(source_tokens, src_kind)
    t_texts, t_cols = _unique_texts(target_tokens, tgt_kind)
    return _dtw(token_cost(s_texts, t_texts), s_rows, t_cols)


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
