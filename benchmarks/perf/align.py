"""Alignment benchmark: vocabulary map, DTW and sparse teacher storage (DESIGN.md sections 2.3 and 7).

    .venv/bin/python benchmarks/perf/align.py           # 32k x 50k vocabularies, 1,000 x 1,000 DTW (~3 min cold)
    .venv/bin/python benchmarks/perf/align.py --quick   # 3.2k x 5k vocabularies, 200 x 200 DTW (smoke test)

1. Tokenizers: a synthetic corpus (a generated lexicon of syllable words, every word at least
   twice plus Zipf-distributed repeats, a few accented letters, digits and punctuation) trains a
   32k SentencePiece-style Unigram tokenizer and a 50k byte-level BPE one with fusion.zoo. They are
   cached under benchmarks/perf/.cache/align/ (the Unigram trainer takes ~1 min on 2 cores); the
   real sizes are printed.
2. map_vocab SentencePiece -> byte-level with the cache off, against the naive way: for each source
   token without an exact match, a Python loop over the whole target vocabulary keeping the least
   edit distance. The naive loop is timed on a random sample of those tokens (with a pure-Python
   Levenshtein, and with rapidfuzz's Levenshtein called per pair) and extrapolated to all of them;
   the exact-match part is left out of the naive time, so the ratio is a lower bound. The sampled
   tokens must get the same target ids as map_vocab.
3. DTW on the first 1,000 tokens of one text under both tokenizers: the numba kernel vs the
   recurrence in plain Python (the reference of tests/fusion/test_align.py, also the source of
   the pure-Python Levenshtein above), both on the same precomputed rapidfuzz cost matrix (the fair
   comparison; the target), and dtw_align end to end (cost + kernel) vs the same cost + the Python
   DP. The paths must be equal. The share of target positions that receive a transferred source
   distribution (one-to-one pairs with equal text) is printed too.
4. Teacher storage: top-K (K = 10) of [T, 32k] float32 log-probabilities, written with np.save as
   int32 ids and float16 log-probs, against the dense float32 array's bytes.

Targets: map_vocab <= 60 s for 32k x 50k; DTW kernel >= 50x the Python DP; top-K storage <= 1% of
dense. With --quick the sizes are smaller, so the size-bound targets are reported but not judged.
Results also go to benchmarks/perf/.cache/align_results.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

sys.path.insert(0, str(C.REPO))
from fusion import align  # noqa: E402

# The plain-Python baselines are the test suite's references: one spelling of the recurrence.
from tests.fusion.test_align import levenshtein as py_levenshtein  # noqa: E402
from tests.fusion.test_align import reference_dtw as python_dtw  # noqa: E402

SIZES = {  # (lexicon words, extra corpus lines, SentencePiece vocab, byte-level vocab, DTW tokens)
    "full": (80_000, 20_000, 32_000, 50_000, 1_000),
    "quick": (8_000, 2_000, 3_200, 5_000, 200),
}
K = 10
DENSE_VOCAB = 32_000
NAIVE_SAMPLE = {"full": (4, 100), "quick": (4, 100)}  # (pure-Python, rapidfuzz-per-pair) sample sizes


def make_corpus(n_words: int, n_lines: int, seed: int = 0) -> list[str]:
    """Lines of random words from a generated lexicon: every word twice, then Zipf-distributed repeats."""
    rng = np.random.default_rng(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
              "st", "tr", "pl", "gr", "ch", "sh", "th", "br", "kl"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "y", "é", "ü"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "ck", "nd", "st", "x"]
    lexicon: set[str] = set()
    while len(lexicon) < n_words:
        word = "".join(onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
                       + codas[rng.integers(len(codas))] for _ in range(rng.integers(1, 5)))
        lexicon.add(word.capitalize() if rng.random() < 0.1 else word)
    words = sorted(lexicon)
    rng.shuffle(words)
    zipf = 1.0 / np.arange(1, n_words + 1)
    order = np.concatenate([rng.permutation(np.tile(np.arange(n_words), 2)),
                            rng.choice(n_words, size=n_lines * 12, p=zipf / zipf.sum())])
    ends = [".", ",", "?", "!", ":", ";", "\n", " 42", " 2024", " (x)", "\t"]
    return [" ".join(words[i] for i in order[s:s + 12]) + ends[rng.integers(len(ends))]
            for s in range(0, len(order), 12)]


def load_tokenizers(size: str, corpus: list[str]):
    """(SentencePiece-style, byte-level) tokenizers for `size`, trained once and cached."""
    from transformers import PreTrainedTokenizerFast

    from fusion.common.files import atomic_output_dir
    from fusion.zoo import train_bpe_tokenizer, train_sp_tokenizer

    n_words, n_lines, v_sp, v_bl, _ = SIZES[size]
    out = []
    for name, train, vocab in (("sp", train_sp_tokenizer, v_sp), ("bpe", train_bpe_tokenizer, v_bl)):
        path = C.CACHE / "align" / f"{name}-{vocab}-w{n_words}-l{n_lines}"
        if not (path / "tokenizer.json").exists():
            print(f"training {name} tokenizer ({vocab} tokens) ...", flush=True)
            start = time.perf_counter()
            with atomic_output_dir(path, force=True) as tmp:
                train(corpus, vocab, out_dir=tmp)
            print(f"  {time.perf_counter() - start:.1f} s", flush=True)
        out.append(PreTrainedTokenizerFast.from_pretrained(path))
    return out


def naive_nearest(text: str, choices: list[tuple[str, int]], distance) -> int:
    """The least-distance target id by a Python loop (ties: shortest text, then lowest id)."""
    best = None
    for cand, idx in choices:
        key = (distance(text, cand), len(cand), idx)
        if best is None or key < best:
            best = key
    return best[2]


def bench_map(source, target, size: str) -> dict:
    from rapidfuzz.distance import Levenshtein

    start = time.perf_counter()
    vmap = align.map_vocab(source, target)  # cache_dir=None: computed, never read
    seconds = time.perf_counter() - start

    s_kind, t_kind = align.token_kind(source), align.token_kind(target)
    s_spec, t_spec = align.special_tokens(source), align.special_tokens(target)
    t_tokens = target.convert_ids_to_tokens(list(range(len(target))))
    texts = [(align.normalize_token(t, t_kind, t_spec), i) for i, t in enumerate(t_tokens)]
    choices = [(t, i) for t, i in texts if t is not None]
    exact = {t for t, _ in choices}
    s_tokens = source.convert_ids_to_tokens(list(range(len(source))))
    misses = [(i, x) for i, t in enumerate(s_tokens)
              if (x := align.normalize_token(t, s_kind, s_spec)) is not None and x not in exact]
    rng = np.random.default_rng(0)
    per_token = {}
    for label, dist, n in (("python", py_levenshtein, NAIVE_SAMPLE[size][0]),
                           ("rapidfuzz", Levenshtein.distance, NAIVE_SAMPLE[size][1])):
        sample = [misses[k] for k in rng.choice(len(misses), size=min(n, len(misses)), replace=False)]
        start = time.perf_counter()
        for idx, text in sample:
            got = naive_nearest(text, choices, dist)
            assert got == vmap[idx], f"naive loop and map_vocab disagree on source id {idx}: {got} vs {vmap[idx]}"
        per_token[label] = (time.perf_counter() - start) / len(sample)
    return {"source_size": len(source), "target_size": len(target), "seconds": seconds,
            "nearest_searched": len(misses), "unmapped": int((vmap < 0).sum()),
            "naive_python_s": per_token["python"] * len(misses),
            "naive_rapidfuzz_loop_s": per_token["rapidfuzz"] * len(misses), "vmap": vmap}


def bench_dtw(source, target, corpus: list[str], n: int, vmap: np.ndarray) -> dict:
    text = ""
    for line in corpus[len(corpus) // 2:]:
        text += line + " "
        if len(text) > 12 * n:
            break
    kinds = (align.token_kind(source), align.token_kind(target))
    src, tgt = source.tokenize(text)[:n], target.tokenize(text)[:n]
    start = time.perf_counter()
    align.dtw_align(src[:5], tgt[:5], kinds=kinds)  # numba: compile, or load the on-disk cache
    first_call = time.perf_counter() - start
    s_txt = [align.normalize_token(t, kinds[0]) or "" for t in src]
    t_txt = [align.normalize_token(t, kinds[1]) or "" for t in tgt]
    t_cost, cost = C.best_of(lambda: align.token_cost(s_txt, t_txt), 5)
    t_kernel, path = C.best_of(lambda: align.dtw_path(cost), 10)
    t_e2e, path_e2e = C.best_of(lambda: align.dtw_align(src, tgt, kinds=kinds), 5)
    cost_list = cost.tolist()
    t_py, py_path = C.best_of(lambda: python_dtw(cost_list), 2)
    assert path == py_path == path_e2e, "numba and Python DTW paths differ"

    pairs = align.one_to_one_pairs(path, s_txt, t_txt)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(source), size=(len(src), K))
    logits = rng.normal(size=(len(src), K))
    _, _, moved = align.transfer_topk(ids, logits - np.log(np.exp(logits).sum(1, keepdims=True)), vmap, pairs,
                                      np.asarray(target.convert_tokens_to_ids(tgt)))
    return {"tokens": (len(src), len(tgt)), "first_call_s": first_call, "cost_s": t_cost, "kernel_s": t_kernel,
            "dtw_align_s": t_e2e, "python_dp_s": t_py, "speedup_dp": t_py / t_kernel,
            "speedup_end_to_end": (t_cost + t_py) / t_e2e, "path_len": len(path),
            "one_to_one_pairs": len(pairs), "transferred_share": float(moved.mean())}


def bench_storage(positions: int) -> dict:
    """Top-K of real [T, V] log-probabilities written with np.save vs the dense array's bytes."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((positions, DENSE_VOCAB), dtype=np.float32) * 3
    dense = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))  # [T, V] float32 log-probs
    top = np.argpartition(dense, -K, axis=1)[:, -K:]
    top_lp = np.take_along_axis(dense, top, axis=1)
    order = np.argsort(-top_lp, axis=1)
    out = C.CACHE / "align" / "teacher"
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "ids.npy", np.take_along_axis(top, order, axis=1).astype(np.int32))  # [T, K]
    np.save(out / "logprobs.npy", np.take_along_axis(top_lp, order, axis=1).astype(np.float16))  # [T, K]
    sparse = sum((out / f).stat().st_size for f in ("ids.npy", "logprobs.npy"))
    return {"positions": positions, "vocab": DENSE_VOCAB, "k": K, "sparse_bytes": sparse,
            "dense_bytes": int(dense.nbytes), "percent": 100 * sparse / dense.nbytes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small vocabularies and sequences (smoke test)")
    size = "quick" if ap.parse_args(argv).quick else "full"
    n_words, n_lines, _, _, n_dtw = SIZES[size]
    corpus = make_corpus(n_words, n_lines)
    source, target = load_tokenizers(size, corpus)
    print(f"tokenizers: source {align.token_kind(source)} {len(source)}, "
          f"target {align.token_kind(target)} {len(target)}", flush=True)

    m = bench_map(source, target, size)
    d = bench_dtw(source, target, corpus, n_dtw, m.pop("vmap"))
    s = bench_storage(n_dtw)
    naive_py, naive_rf = m["naive_python_s"] / m["seconds"], m["naive_rapidfuzz_loop_s"] / m["seconds"]
    full = size == "full"
    rows = [
        ["vocab sizes (source x target)", f"{m['source_size']} x {m['target_size']}"],
        ["map_vocab seconds (cache off)", f"{m['seconds']:.2f}"],
        ["  source ids searched by edit distance", m["nearest_searched"]],
        ["  naive loop, pure-Python Levenshtein (extrapolated s)", f"{m['naive_python_s']:.0f}"],
        ["  naive loop, rapidfuzz per pair (extrapolated s)", f"{m['naive_rapidfuzz_loop_s']:.0f}"],
        ["  naive / map_vocab (pure Python)", f"{naive_py:.0f}x"],
        ["  naive / map_vocab (rapidfuzz per pair)", f"{naive_rf:.0f}x"],
        ["DTW tokens (source x target)", f"{d['tokens'][0]} x {d['tokens'][1]}"],
        ["  first call (numba compile or cache load) s", f"{d['first_call_s']:.2f}"],
        ["  cost matrix (rapidfuzz cdist) ms", f"{1000 * d['cost_s']:.1f}"],
        ["  numba DP + backtrack ms", f"{1000 * d['kernel_s']:.2f}"],
        ["  plain Python DP + backtrack ms", f"{1000 * d['python_dp_s']:.0f}"],
        ["  speedup, same cost matrix", f"{d['speedup_dp']:.0f}x"],
        ["  speedup, end to end (cost included both sides)", f"{d['speedup_end_to_end']:.0f}x"],
        ["  one-to-one same-text pairs / transferred share", f"{d['one_to_one_pairs']} / {d['transferred_share']:.2f}"],
        ["teacher top-K bytes (T, K, V)", f"{s['sparse_bytes']} ({s['positions']}, {K}, {DENSE_VOCAB})"],
        ["  dense float32 bytes", s["dense_bytes"]],
        ["  top-K / dense %", f"{s['percent']:.3f}"],
    ]
    C.print_table(["measure", "value"], rows)
    targets = [
        C.target(f"map_vocab {m['source_size']}x{m['target_size']} seconds", m["seconds"], "<= 60",
                 m["seconds"] <= 60 if full else None),
        C.target(f"DTW {d['tokens'][0]}x{d['tokens'][1]}: Python DP / numba DP", d["speedup_dp"], ">= 50",
                 d["speedup_dp"] >= 50 if full else None),
        C.target(f"teacher top-{K} storage % of dense (|V| = {DENSE_VOCAB})", s["percent"], "<= 1",
                 s["percent"] <= 1),
    ]
    print()
    C.print_table(["target", "value", "goal", "ok"],
                  [[t["metric"], f"{t['value']:.3g}", t["target"], t["ok"]] for t in targets])
    path = C.write_results("align", targets, size=size, map_vocab=m, dtw=d, storage=s,
                           naive_ratio_python=naive_py, naive_ratio_rapidfuzz_loop=naive_rf)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
