"""Alignment benchmark: vocabulary maps, DTW and sparse teacher storage (DESIGN.md sections 2.3 and 7).

    .venv/bin/python benchmarks/perf/align.py           # synthetic 32k x 50k + six real pairs (~5 min cold)
    .venv/bin/python benchmarks/perf/align.py --quick   # 3.2k x 5k synthetic, two real pairs (smoke test)
    .venv/bin/python benchmarks/perf/align.py --no-real # the synthetic part only

1. Synthetic tokenizers: a generated corpus (a lexicon of syllable words, every word at least twice plus
   Zipf-distributed repeats, a few accented letters, digits and punctuation) trains a 32k SentencePiece-style
   Unigram tokenizer and a 50k byte-level BPE one with fusion.zoo, cached under benchmarks/perf/.cache/align/
   (the Unigram trainer takes ~1 min on 2 cores).
2. map_vocab SentencePiece -> byte-level with the cache off, against the naive way: for each source token
   without an exact match, a Python loop over the whole target vocabulary keeping the least edit distance,
   timed on a random sample (pure-Python Levenshtein, and rapidfuzz's per pair) and extrapolated; the
   exact-match part is left out of the naive time, so the ratio is a lower bound. The sampled tokens must get
   the same target ids as map_vocab. DTW on the first 1,000 tokens of one text under both tokenizers.
3. Real tokenizers (fusion.assets: llama.cpp's llama-spm 32,000, qwen2 151,936 and llama-bpe 128,257
   vocabularies, SmolLM2's 49,152; skipped with the reason when the assets cannot be had): map_vocab with the
   cache off for llama-spm <-> qwen2, llama-bpe <-> qwen2 and SmolLM2 <-> llama-spm, each direction, with the
   share of source ids mapped to a token of identical text, by edit distance, special to special, and unmapped.
4. DTW on real multi-turn assistant answers (ANSWERS of tests/fusion/test_align_real.py: prose, code,
   numbers, each with a follow-up turn) tokenized both ways: the share of target tokens in a one-to-one pair
   of equal text (those receive the source's distribution). Speed on llama-spm x qwen2 tokens at the lengths
   answers have (~100, ~300, ~600 tokens: one answer, one conversation's two turns) and ~1,000 (all answers):
   - DP: numba kernel vs the recurrence in plain Python (the reference of tests/fusion/test_align.py, also
     the source of the pure-Python Levenshtein above) on the same rapidfuzz cost matrix; also the NumPy tier;
   - end to end: dtw_align from tokens vs that cost matrix + the Python DP, with its ceiling: both sides pay
     for rapidfuzz's edit distances, and dtw_align also for looking its token texts up, so even a DP that
     cost nothing would leave the ratio at (cost + Python DP) / (dtw_align - numba DP).
   The paths must be equal. Best of several calls, after `align.warm_up()`, token texts remembered (a fusion
   run aligns thousands of answers over one small working vocabulary).
   First call: a fresh process imports fusion.align and aligns one answer, as it does now (the NumPy tier:
   numba is started only after alignments have spent what starting it costs), and starting numba first
   (import, start, kernel read from numba's disk cache; what every first call paid before).
5. Teacher storage: top-K (K = 10) of [T, 32k] float32 log-probabilities, written with np.save as int32 ids
   and float16 log-probs, against the dense float32 array's bytes.

Targets: map_vocab <= 60 s for 32k x 50k and for every real pair; DTW >= 50x the Python DP at every length,
both the DP alone and end to end; top-K storage <= 1% of dense. With --quick the synthetic sizes are smaller,
so their size-bound targets are reported but not judged. Results also go to
benchmarks/perf/.cache/align_results.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
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
from tests.fusion.test_align_real import ANSWERS, map_shares, vocab_texts  # noqa: E402

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


def dtw_speed(src: list[str], tgt: list[str], kinds: tuple[str, str], py_repeats: int = 2) -> dict:
    """DTW of two tokenizations: numba DP, NumPy DP and dtw_align vs the plain-Python DP (same path)."""
    s_txt = [align.normalize_token(t, kinds[0]) or "" for t in src]
    t_txt = [align.normalize_token(t, kinds[1]) or "" for t in tgt]
    t_cost, cost = C.best_of(lambda: align.token_cost(s_txt, t_txt), 5)
    t_dp, path = C.best_of(lambda: align.dtw_path(cost), 20)
    rows, cols = np.arange(len(src)), np.arange(len(tgt))
    t_numpy, (np_src, np_tgt) = C.best_of(lambda: align.sequence._dtw_numpy(cost, rows, cols), 3)
    t_e2e, path_e2e = C.best_of(lambda: align.dtw_align(src, tgt, kinds=kinds), 20)
    cost_list = cost.tolist()
    t_py, py_path = C.best_of(lambda: python_dtw(cost_list), py_repeats)
    assert path == py_path == path_e2e == list(zip(np_src.tolist(), np_tgt.tolist())), "DTW paths differ"
    reference = t_cost + t_py  # what the plain-Python way pays end to end
    return {"tokens": (len(src), len(tgt)), "cost_s": t_cost, "kernel_s": t_dp, "numpy_s": t_numpy,
            "dtw_align_s": t_e2e, "python_dp_s": t_py, "speedup_dp": t_py / t_dp, "speedup_numpy": t_py / t_numpy,
            "speedup_end_to_end": reference / t_e2e, "ceiling_end_to_end": reference / max(t_e2e - t_dp, 1e-9),
            "path": path, "texts": (s_txt, t_txt)}


def bench_dtw(source, target, corpus: list[str], n: int, vmap: np.ndarray) -> dict:
    text = ""
    for line in corpus[len(corpus) // 2:]:
        text += line + " "
        if len(text) > 12 * n:
            break
    kinds = (align.token_kind(source), align.token_kind(target))
    src, tgt = source.tokenize(text)[:n], target.tokenize(text)[:n]
    d = dtw_speed(src, tgt, kinds)
    pairs = align.one_to_one_pairs(d.pop("path"), *d.pop("texts"))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(source), size=(len(src), K))
    logits = rng.normal(size=(len(src), K))
    _, _, moved = align.transfer_topk(ids, logits - np.log(np.exp(logits).sum(1, keepdims=True)), vmap, pairs,
                                      np.asarray(target.convert_tokens_to_ids(tgt)))
    return {**d, "one_to_one_pairs": len(pairs), "transferred_share": float(moved.mean())}


REAL_PAIRS = {"full": [("llama-spm", "qwen2"), ("qwen2", "llama-spm"), ("llama-bpe", "qwen2"), ("qwen2", "llama-bpe"),
                       ("smollm2", "llama-spm"), ("llama-spm", "smollm2")],
              "quick": [("llama-spm", "qwen2"), ("smollm2", "llama-spm")]}
DTW_PAIRS = [("llama-spm", "qwen2"), ("llama-bpe", "qwen2"), ("smollm2", "llama-spm")]
TOPICS = ("prose", "code", "numbers")


def real_tokenizers(names: set[str]) -> tuple[dict, str | None]:
    """{name: tokenizer} from fusion.assets, or ({}, why not)."""
    from fusion import assets
    from fusion.chat import load_tokenizer

    if not assets.available():
        return {}, "the asset cache is incomplete and the package registry cannot be reached"
    return {n: load_tokenizer(assets.smollm2_dir() if n == "smollm2" else assets.tokenizer_dir(n))
            for n in sorted(names)}, None


def bench_real_maps(toks: dict, pairs: list[tuple[str, str]]) -> list[dict]:
    out = []
    for a, b in pairs:
        start = time.perf_counter()
        vmap = align.map_vocab(toks[a], toks[b])  # cache_dir=None: computed, never read
        seconds = time.perf_counter() - start
        shares = map_shares(vmap, vocab_texts(toks[a]), vocab_texts(toks[b]))
        out.append({"pair": f"{a} -> {b}", "sizes": (len(toks[a]), len(toks[b])), "seconds": seconds, **shares})
        print(f"  {a} -> {b}: {seconds:.1f} s", flush=True)
    return out


def answer_texts() -> dict[str, str]:
    """Each answer, each conversation's two turns, and everything: ~100 to ~2,000 tokens."""
    texts = dict(ANSWERS)
    texts |= {f"{t} (2 turns)": ANSWERS[t] + "\n\n" + ANSWERS[f"{t}_followup"] for t in TOPICS}
    texts["all answers"] = "\n\n".join(ANSWERS.values())
    return texts


def bench_real_dtw(toks: dict) -> dict:
    """1:1 share per pair and answer; speed at ~100, ~300, ~600 and 1,000 llama-spm x qwen2 tokens."""
    align.warm_up()
    texts, shares = answer_texts(), {}
    for a, b in DTW_PAIRS:
        kinds = (align.token_kind(toks[a]), align.token_kind(toks[b]))
        for name, text in texts.items():
            src, tgt = toks[a].tokenize(text), toks[b].tokenize(text)
            s_txt = [align.normalize_token(t, kinds[0]) or "" for t in src]
            t_txt = [align.normalize_token(t, kinds[1]) or "" for t in tgt]
            pairs = align.one_to_one_pairs(align.dtw_align(src, tgt, kinds=kinds), s_txt, t_txt)
            shares[(name, f"{a} x {b}")] = (len(src), len(tgt), len(pairs) / len(tgt))
    sp, qwen = toks["llama-spm"], toks["qwen2"]
    lengths = {"~100": texts["prose_followup"], "~300": texts["numbers"], "~600": texts["code (2 turns)"],
               "1000": texts["all answers"]}
    speed = {}
    for label, text in lengths.items():
        n = 1000 if label == "1000" else None
        d = dtw_speed(sp.tokenize(text)[:n], qwen.tokenize(text)[:n], ("sentencepiece", "byte_level"))
        speed[label] = {k: v for k, v in d.items() if k not in ("path", "texts")}
        print(f"  DTW {label}: {d['tokens'][0]} x {d['tokens'][1]} tokens", flush=True)
    return {"shares": shares, "speed": speed, "first_call": first_call(sp.tokenize(texts["numbers"]),
                                                                       qwen.tokenize(texts["numbers"]))}


_FIRST_CALL = """
import json, sys, time
t0 = time.perf_counter()
from fusion import align
t1 = time.perf_counter()
src, tgt, numba_first = json.load(open(sys.argv[1]))
if numba_first:
    align.warm_up()
t2 = time.perf_counter()
align.dtw_align(src, tgt, kinds=("sentencepiece", "byte_level"))
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "numba_start_s": t2 - t1, "call_s": t3 - t2}))
"""


def first_call(src: list[str], tgt: list[str]) -> dict:
    """A fresh process's import of fusion.align and first dtw_align: as now (NumPy tier), and starting numba
    first (its kernel read from numba's disk cache: the second of two runs)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, numba_first in (("now", False), ("numba first", True)):
            (Path(tmp) / "args.json").write_text(json.dumps([src, tgt, numba_first]))
            for _ in range(2):
                run = subprocess.run([sys.executable, "-c", _FIRST_CALL, str(Path(tmp) / "args.json")], cwd=C.REPO,
                                     capture_output=True, text=True, check=True)
            out[label] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


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


def synthetic_rows(m: dict, d: dict, s: dict) -> list[list[object]]:
    return [
        ["vocab sizes (source x target)", f"{m['source_size']} x {m['target_size']}"],
        ["map_vocab seconds (cache off)", f"{m['seconds']:.2f}"],
        ["  source ids searched by edit distance", m["nearest_searched"]],
        ["  naive loop, pure-Python Levenshtein (extrapolated s)", f"{m['naive_python_s']:.0f}"],
        ["  naive loop, rapidfuzz per pair (extrapolated s)", f"{m['naive_rapidfuzz_loop_s']:.0f}"],
        ["  naive / map_vocab (pure Python)", f"{m['naive_python_s'] / m['seconds']:.0f}x"],
        ["  naive / map_vocab (rapidfuzz per pair)", f"{m['naive_rapidfuzz_loop_s'] / m['seconds']:.0f}x"],
        ["DTW tokens (source x target)", f"{d['tokens'][0]} x {d['tokens'][1]}"],
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


def print_real(maps: list[dict], dtw: dict) -> None:
    print("\nreal tokenizers: vocabulary maps (cache off), share of source ids")
    C.print_table(["pair", "sizes", "seconds", "identical text", "edit distance", "special", "unmapped"],
                  [[r["pair"], f"{r['sizes'][0]} -> {r['sizes'][1]}", f"{r['seconds']:.1f}",
                    f"{r['identical']:.3f}", f"{r['edit_distance']:.3f}", f"{r['special']:.4f}",
                    f"{r['unmapped']:.4f}"] for r in maps])
    names = [f"{a} x {b}" for a, b in DTW_PAIRS]
    print("\nDTW on real answers: tokens (source x target) and share of target tokens in a 1:1 same-text pair")
    C.print_table(["answer"] + names, [[answer] + [f"{n} x {m}: {share:.2f}" for n, m, share in
                                                   (dtw["shares"][(answer, p)] for p in names)]
                                       for answer in answer_texts()])
    print("\nDTW speed, llama-spm x qwen2 tokens (ms; ratios against the plain-Python DP in this run)")
    C.print_table(["length", "tokens", "python DP", "numba DP", "ratio", "NumPy DP", "ratio", "cost + python DP",
                   "dtw_align", "ratio", "ceiling"],
                  [[label, f"{d['tokens'][0]} x {d['tokens'][1]}", f"{1000 * d['python_dp_s']:.1f}",
                    f"{1000 * d['kernel_s']:.3f}", f"{d['speedup_dp']:.0f}x", f"{1000 * d['numpy_s']:.2f}",
                    f"{d['speedup_numpy']:.0f}x", f"{1000 * (d['cost_s'] + d['python_dp_s']):.1f}",
                    f"{1000 * d['dtw_align_s']:.3f}", f"{d['speedup_end_to_end']:.0f}x",
                    f"{d['ceiling_end_to_end']:.0f}x"] for label, d in dtw["speed"].items()])
    fc = dtw["first_call"]
    print("\nfirst dtw_align of a fresh process (~300 tokens), seconds")
    C.print_table(["way", "import fusion.align", "start numba", "first call"],
                  [[way, f"{r['import_s']:.2f}", f"{r['numba_start_s']:.2f}", f"{r['call_s']:.4f}"]
                   for way, r in (("now (NumPy tier until numba pays)", fc["now"]),
                                  ("numba first (as before)", fc["numba first"]))])


def real_targets(maps: list[dict], dtw: dict) -> list[dict]:
    out = [C.target(f"map_vocab {r['pair']} ({r['sizes'][0]} -> {r['sizes'][1]}) seconds", r["seconds"], "<= 60",
                    r["seconds"] <= 60) for r in maps]
    for d in dtw["speed"].values():
        size = f"{d['tokens'][0]}x{d['tokens'][1]}"
        out.append(C.target(f"DTW {size} real tokens: Python DP / numba DP", d["speedup_dp"], ">= 50",
                            d["speedup_dp"] >= 50))
        out.append(C.target(f"DTW {size} real tokens: (cost + Python DP) / dtw_align", d["speedup_end_to_end"],
                            f">= 50 (ceiling {d['ceiling_end_to_end']:.0f}x)", d["speedup_end_to_end"] >= 50))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small synthetic vocabularies, two real pairs (smoke test)")
    ap.add_argument("--no-real", action="store_true", help="skip the real tokenizers")
    args = ap.parse_args(argv)
    size = "quick" if args.quick else "full"
    n_words, n_lines, _, _, n_dtw = SIZES[size]
    corpus = make_corpus(n_words, n_lines)
    source, target = load_tokenizers(size, corpus)
    print(f"tokenizers: source {align.token_kind(source)} {len(source)}, "
          f"target {align.token_kind(target)} {len(target)}", flush=True)

    align.warm_up()  # numba's start is measured in a fresh process below, not here
    m = bench_map(source, target, size)
    d = bench_dtw(source, target, corpus, n_dtw, m.pop("vmap"))
    s = bench_storage(n_dtw)
    C.print_table(["measure", "value"], synthetic_rows(m, d, s))
    full = size == "full"
    targets = [
        C.target(f"map_vocab {m['source_size']}x{m['target_size']} seconds", m["seconds"], "<= 60",
                 m["seconds"] <= 60 if full else None),
        C.target(f"DTW {d['tokens'][0]}x{d['tokens'][1]}: Python DP / numba DP", d["speedup_dp"], ">= 50",
                 d["speedup_dp"] >= 50 if full else None),
        C.target(f"teacher top-{K} storage % of dense (|V| = {DENSE_VOCAB})", s["percent"], "<= 1",
                 s["percent"] <= 1),
    ]
    real: dict = {"skipped": "--no-real"}
    if not args.no_real:
        pairs = REAL_PAIRS[size]
        toks, why = real_tokenizers({n for p in pairs + DTW_PAIRS for n in p})
        if why:
            print(f"\nreal tokenizers: skipped ({why})")
            real = {"skipped": why}
        else:
            print("\nreal tokenizers: vocabulary maps", flush=True)
            real = {"maps": bench_real_maps(toks, pairs), "dtw": bench_real_dtw(toks)}
            print_real(real["maps"], real["dtw"])
            targets += real_targets(real["maps"], real["dtw"])
            real["dtw"]["shares"] = {" / ".join(k): v for k, v in real["dtw"]["shares"].items()}
    print()
    C.print_table(["target", "value", "goal", "ok"],
                  [[t["metric"], f"{t['value']:.3g}", t["target"], t["ok"]] for t in targets])
    path = C.write_results("align", targets, size=size, map_vocab=m, dtw=d, storage=s, real=real,
                           naive_ratio_python=m["naive_python_s"] / m["seconds"],
                           naive_ratio_rapidfuzz_loop=m["naive_rapidfuzz_loop_s"] / m["seconds"])
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
