"""Vocabulary mapping, DTW alignment and top-K transfer (fusion/align/), against independent references."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from fusion.align import (
    dtw_align,
    dtw_path,
    map_vocab,
    normalize_token,
    one_to_one_pairs,
    sequence,
    token_kind,
    transfer_topk,
    vocab,
)
from fusion.align.tokens import is_byte_piece
from fusion.common.errors import FusevalError

TEXTS = [
    "The quick brown fox jumps over the lazy dog.\nThe dog sleeps.",
    "Merge the models, then measure whether the merged model got better.",
    "Café, naïve, Zürich: 12 plus 30 is 42.\tTabs\tand\nnewlines.",
    "def add(a, b):\n    return a + b\n",
    "User: hello there! Assistant: Hello, how can I help you today?",
] * 3


def crafted(kind: str, tokens: list[str], specials: tuple[str, ...] = (), **roles):
    """A fast tokenizer whose ids are exactly the positions in `tokens` (no training)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if kind == "byte_level":
        tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    else:
        tok = Tokenizer(models.Unigram([(t, -1.0) for t in tokens], unk_id=None, byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.add_special_tokens(list(specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **roles)
    assert [fast.convert_ids_to_tokens(i) for i in range(len(fast))] == tokens
    return fast


@pytest.fixture(scope="module")
def zoo_pair():
    from fusion.zoo import train_bpe_tokenizer, train_sp_tokenizer

    return train_sp_tokenizer(TEXTS, 330), train_bpe_tokenizer(TEXTS, 420)


def as_bytes(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


# --- normalize_token / token_kind -------------------------------------------------------------

@pytest.mark.parametrize("token,kind,expected", [
    ("Ġthe", "byte_level", " the"),
    ("Ċ", "byte_level", "\n"),
    ("ĉx", "byte_level", "\tx"),
    ("Ã©", "byte_level", as_bytes("é")),           # the two UTF-8 bytes of é, byte-level encoded
    ("ä¸Ń", "byte_level", as_bytes("中")),
    ("▁the", "sentencepiece", " the"),
    ("<0x0A>", "sentencepiece", "\n"),
    ("<0xC3>", "sentencepiece", "\xc3"),           # a lone byte of a multi-byte character
    ("é", "sentencepiece", as_bytes("é")),
    ("", "byte_level", None),
    ("", "sentencepiece", None),
])
def test_normalize_token(token, kind, expected):
    assert normalize_token(token, kind) == expected


def test_normalize_token_specials_and_kind():
    assert normalize_token("<s>", "sentencepiece", specials={"<s>"}) is None
    assert normalize_token("<|end|>", "byte_level", specials={"<|end|>"}) is None
    assert normalize_token("<s>", "sentencepiece") == "<s>"  # not special in this tokenizer: plain text
    with pytest.raises(FusevalError, match="unknown token kind"):
        normalize_token("a", "wordpiece")
    assert [is_byte_piece(t) for t in ["<0x0A>", "<0xff>", "<0x0A", "<0x0AB>", "▁<0x0A>", "<0xG0>"]] == [
        True, True, False, False, False, False]


def test_byte_level_round_trip_through_tokenizers_pre_tokenizer():
    """tokenizers' own ByteLevel encoding of every ASCII char and some multi-byte ones maps back to the bytes."""
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for ch in [chr(b) for b in range(128)] + ["é", "ß", "中", "😀", "\u00a0"]:
        (encoded, _), = pre.pre_tokenize_str(ch)
        assert normalize_token(encoded, "byte_level") == as_bytes(ch), repr(ch)


def test_token_kind(zoo_pair):
    sp, bpe = zoo_pair
    assert token_kind(sp) == "sentencepiece"
    assert token_kind(bpe) == "byte_level"
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # Read from the model (a Unigram states byte fallback only in its serialized form) or the normalizer
    # (Llama-2 style: "▁" prepended and put for spaces, no pre-tokenizer, no byte fallback).
    uni = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], unk_id=0, byte_fallback=True))
    assert token_kind(PreTrainedTokenizerFast(tokenizer_object=uni)) == "sentencepiece"
    bpe_sp = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    bpe_sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    assert token_kind(PreTrainedTokenizerFast(tokenizer_object=bpe_sp)) == "sentencepiece"
    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(FusevalError, match="cannot tell"):
        token_kind(PreTrainedTokenizerFast(tokenizer_object=wp))


# --- map_vocab --------------------------------------------------------------------------------

def test_map_vocab_exact_bytes_and_specials():
    src = crafted("sentencepiece",
                  ["<unk>", "<s>", "</s>", "<|end|>", "<|user|>", "▁the", "<0x0A>", "▁", "<0xC3>", "é"],
                  specials=("<unk>", "<s>", "</s>", "<|end|>", "<|user|>"),
                  unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tgt = crafted("byte_level",
                  ["<pad>", "<|endoftext|>", "<|end|>", "Ċ", "Ġthe", "Ġ", "Ã", "Ã©", "the", "<s>"],
                  specials=("<pad>", "<|endoftext|>", "<|end|>"),
                  pad_token="<pad>", eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    vmap = map_vocab(src, tgt)
    assert vmap.dtype == np.int64 and vmap.shape == (len(src),)
    assert vmap.tolist() == [
        -1,  # <unk>: no unk in the target
        1,   # <s> -> bos role (the target's ordinary "<s>" text never matches a special)
        1,   # </s> -> eos role
        2,   # <|end|>: same content
        -1,  # <|user|>: neither content nor role
        4,   # ▁the = Ġthe
        3,   # <0x0A> = Ċ
        5,   # ▁ = Ġ
        6,   # byte 0xC3 = Ã
        7,   # é = Ã© (both the bytes C3 A9)
    ]


def test_map_vocab_special_with_several_roles_maps_to_eos():
    gpt2_like = crafted("byte_level", ["<|endoftext|>", "Ġa"], specials=("<|endoftext|>",),
                        bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    llama_like = crafted("sentencepiece", ["<unk>", "<s>", "</s>", "▁a"], specials=("<unk>", "<s>", "</s>"),
                         unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    assert map_vocab(gpt2_like, llama_like).tolist() == [2, 3]
    assert map_vocab(llama_like, gpt2_like).tolist() == [0, 0, 0, 1]  # every role of <|endoftext|>


def test_map_vocab_ordinary_piece_then_lowest_id_and_nothing_maps_to_minus_one():
    src = crafted("byte_level", ["Ġ", "", "Ġthe", "A", "B"])
    tgt = crafted("sentencepiece", ["x", "<0x20>", "▁the", "<0x41>", "▁", "▁the▁", " ", "A", "<0x42>"])
    # " " exists three times in the target: the byte-fallback <0x20> (id 1) loses to the ordinary pieces,
    # of which ▁ (id 4) has the lower id. "A" likewise; "B" has only its byte piece; "" maps to nothing.
    assert map_vocab(src, tgt).tolist() == [4, -1, 2, 7, 8]


def test_map_vocab_nearest_tie_rules():
    # "abcd" has no exact match; candidates at distance 1: lengths 3 ("abc"), 4, 5 -> shortest.
    tgt = crafted("sentencepiece", ["abcde", "abxd", "zzzz", "abc", "q"])
    src = crafted("byte_level", ["abcd"])
    assert map_vocab(src, tgt).tolist() == [3]
    # Only length-4 candidates at distance 1: the lowest id wins; the special at distance 0 is excluded.
    tgt = crafted("sentencepiece", ["<abcd>", "zzzz", "abcy", "abcx", "abcd", "xbcd"], specials=("abcd",))
    assert map_vocab(src, tgt).tolist() == [2]
    # A farther but shorter candidate loses to a nearer one.
    tgt = crafted("sentencepiece", ["a", "abcdef"])
    assert map_vocab(src, tgt).tolist() == [1]


def test_map_vocab_cache(tmp_path, zoo_pair, monkeypatch):
    sp, bpe = zoo_pair
    first = map_vocab(sp, bpe, cache_dir=tmp_path)
    entries = sorted(tmp_path.glob("vocab_map-*/map.npy"))
    assert len(entries) == 1 and np.array_equal(np.load(entries[0]), first)

    def boom(*args):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(vocab, "_compute_map", boom)
    assert np.array_equal(map_vocab(sp, bpe, cache_dir=tmp_path), first)
    monkeypatch.undo()
    other = crafted("byte_level", ["<pad>", "Ġthe", "e"], specials=("<pad>",), pad_token="<pad>")
    map_vocab(sp, other, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("vocab_map-*/map.npy"))) == 2
    same_vocab_other_role = crafted("byte_level", ["<pad>", "Ġthe", "e"], specials=("<pad>",), eos_token="<pad>")
    assert map_vocab(sp, same_vocab_other_role, cache_dir=tmp_path)[sp.convert_tokens_to_ids("</s>")] == 0
    assert len(list(tmp_path.glob("vocab_map-*/map.npy"))) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def reference_map(source, target) -> list[int]:
    """MinED written as the plain loops of the rules (DESIGN.md 2.3 step 2)."""
    s_kind, t_kind = token_kind(source), token_kind(target)
    s_special = {t.content for t in source.added_tokens_decoder.values()} | set(source.all_special_tokens)
    t_special = {t.content for t in target.added_tokens_decoder.values()} | set(target.all_special_tokens)
    t_tokens = target.convert_ids_to_tokens(list(range(len(target))))
    t_texts = [normalize_token(t, t_kind, t_special) for t in t_tokens]
    # The id that stands for each text: ordinary pieces before byte-fallback ones (<0x41>), then the lowest id.
    stands_for = {}
    for _, i in sorted((t_kind == "sentencepiece" and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", t) is not None, i)
                         for i, t in enumerate(t_tokens)):
        if t_texts[i] is not None:
            stands_for.setdefault(t_texts[i], i)
    out = []
    for tok in source.convert_ids_to_tokens(list(range(len(source)))):
        if tok in s_special:
            ids = [i for i, t in enumerate(t_tokens) if t == tok and t in t_special]
            for role in ("eos_token", "bos_token", "pad_token", "unk_token"):
                if not ids and getattr(source, role) == tok and getattr(target, role) is not None:
                    ids = [i for i, t in enumerate(t_tokens) if t == getattr(target, role) and t in t_special]
            out.append(ids[0] if ids else -1)
            continue
        text = normalize_token(tok, s_kind)
        if text is None:
            out.append(-1)
            continue
        scored = [(levenshtein(text, t), len(t), i) for t, i in stands_for.items()]
        out.append(min(scored)[2])
    return out


def test_map_vocab_matches_brute_force_on_trained_tokenizers(zoo_pair):
    sp, bpe = zoo_pair
    assert len(sp) > 300 and len(bpe) > 400
    assert map_vocab(sp, bpe).tolist() == reference_map(sp, bpe)
    assert map_vocab(bpe, sp).tolist() == reference_map(bpe, sp)


# --- dtw_align --------------------------------------------------------------------------------

def reference_dtw(cost: list[list[int]]) -> list[tuple[int, int]]:
    """The recurrence and tie rule of the spec, in plain Python."""
    n, m = len(cost), len(cost[0]) if cost else 0
    if not n or not m:
        return []
    inf = float("inf")
    acc = [[inf] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            prev = 0 if i == j == 0 else min(acc[i - 1][j - 1] if i and j else inf,
                                              acc[i - 1][j] if i else inf, acc[i][j - 1] if j else inf)
            acc[i][j] = cost[i][j] + prev
    i, j, path = n - 1, m - 1, [(n - 1, m - 1)]
    while (i, j) != (0, 0):
        steps = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]  # tie order: diagonal, up, left
        i, j = min((s for s in steps if s[0] >= 0 and s[1] >= 0), key=lambda s: acc[s[0]][s[1]])
        path.append((i, j))
    return path[::-1]


def heuristic(tok: str) -> str:
    if tok.startswith("<0x") and len(tok) == 6:
        return chr(int(tok[3:5], 16))
    return tok.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n")


@pytest.fixture(params=["numpy", "numba"])
def dtw_tier(request, monkeypatch):
    """Every alignment in the test takes one tier: NumPy (numba never started) or the compiled kernel."""
    if request.param == "numba":
        sequence.warm_up()
    else:
        monkeypatch.setitem(sequence._tiers, "jit", None)
        monkeypatch.setattr(sequence, "_JIT_START_S", float("inf"))
    return request.param


def test_dtw_tiers_match_reference_on_random_cost_matrices(dtw_tier):
    rng = np.random.default_rng(3)
    shapes = [(1, 1), (1, 9), (9, 1), (2, 2)] + [tuple(rng.integers(1, 40, size=2)) for _ in range(120)]
    for n, m in shapes:
        high = int(rng.choice([2, 3, 50, 10**12]))  # few values: many ties; huge ones: no overflow
        cost = rng.integers(0, high, size=(n, m))
        assert dtw_path(cost) == reference_dtw(cost.tolist()), (dtw_tier, cost)
    assert dtw_path(np.zeros((0, 4), dtype=np.int32)) == []
    with pytest.raises(FusevalError, match="integer cost matrix"):
        dtw_path(np.zeros((2, 2)))


def test_dtw_ski_rental_switches_to_numba_once_the_numpy_tier_has_spent_its_start(monkeypatch):
    monkeypatch.setitem(sequence._tiers, "jit", None)
    monkeypatch.setitem(sequence._tiers, "numpy_s", 0.0)
    monkeypatch.setattr(sequence, "_JIT_START_S", 1e-9)
    cost = np.array([[0, 1], [1, 0]])
    assert dtw_path(cost) == [(0, 0), (1, 1)]  # the NumPy tier: nothing spent yet
    assert sequence._tiers["jit"] is None and sequence._tiers["numpy_s"] > 0
    assert dtw_path(cost) == [(0, 0), (1, 1)]  # spent more than numba's start: numba from now on
    assert sequence._tiers["jit"] is not None


def test_dtw_matches_reference_on_random_sequences(dtw_tier):
    rng = random.Random(0)
    pieces = ["a", "b", "ab", "Ġa", "▁a", "▁b", "Ċ", "<0x0A>", "ba", "aab", " "]
    sizes = [(0, 0), (0, 3), (3, 0), (1, 1), (1, 7), (7, 1)] + [(rng.randint(1, 25), rng.randint(1, 25))
                                                                for _ in range(150)]
    for n, m in sizes:
        src = [rng.choice(pieces) for _ in range(n)]
        tgt = [rng.choice(pieces) for _ in range(m)]
        cost = [[levenshtein(heuristic(a), heuristic(b)) for b in tgt] for a in src]
        assert dtw_align(src, tgt) == reference_dtw(cost), (src, tgt)


def test_dtw_with_kinds_on_real_tokenizations(zoo_pair, dtw_tier):
    sp, bpe = zoo_pair
    text = "Café in Zürich:\n the merged model got better."
    src, tgt = sp.tokenize(text), bpe.tokenize(text)
    kinds = ("sentencepiece", "byte_level")
    s_txt = [normalize_token(t, kinds[0]) or "" for t in src]
    t_txt = [normalize_token(t, kinds[1]) or "" for t in tgt]
    assert "".join(t_txt) == "".join(s_txt).removeprefix(" ") == as_bytes(text)  # SP marks the first word too
    path = dtw_align(src, tgt, kinds=kinds)
    assert path == reference_dtw([[levenshtein(a, b) for b in t_txt] for a in s_txt])
    assert path[0] == (0, 0) and path[-1] == (len(src) - 1, len(tgt) - 1)


# --- one_to_one_pairs -------------------------------------------------------------------------

def test_one_to_one_pairs_never_pairs_a_character_with_a_word():
    def texts(tokens, kind):
        return [normalize_token(t, kind) for t in tokens]

    # Equal counts but different cuts: DTW goes straight down the diagonal, pairing " x" with the
    # word " xyz" and " dog" with "g", each exactly once. Only the text check stops them.
    src, tgt = ["▁x", "y", "z", "▁dog"], ["Ġxyz", "Ġd", "o", "g"]
    path = dtw_align(src, tgt)
    assert path == [(0, 0), (1, 1), (2, 2), (3, 3)]
    s_txt, t_txt = texts(src, "sentencepiece"), texts(tgt, "byte_level")
    assert one_to_one_pairs(path, s_txt, t_txt) == []
    assert one_to_one_pairs(path, s_txt, t_txt, max_distance=2) == [(0, 0), (1, 1), (2, 2)]
    # Character-level source against a word: " cat" takes three source tokens, so it is not 1:1.
    src, tgt = ["▁the", "▁c", "a", "t", "▁sat"], ["Ġthe", "Ġcat", "Ġsat"]
    path = dtw_align(src, tgt)
    assert path == [(0, 0), (1, 1), (2, 1), (3, 1), (4, 2)]
    assert one_to_one_pairs(path, texts(src, "sentencepiece"), texts(tgt, "byte_level"), max_distance=9) == [
        (0, 0), (4, 2)]
    assert one_to_one_pairs([(0, 0)], [None], [None]) == []  # specials stand for no text
    assert one_to_one_pairs([], [], []) == []
    with pytest.raises(FusevalError, match="past the texts"):
        one_to_one_pairs([(0, 5)], ["a"], ["b"])


# --- transfer_topk ----------------------------------------------------------------------------

def dense_reference(src_ids, src_lp, vmap, pairs, gold, v_t):
    """[T_t, V_t] probabilities built entry by entry; None for rows with nothing transferred."""
    dense = np.zeros((len(gold), v_t))
    moved = np.zeros(len(gold), dtype=bool)
    for j, i in pairs:
        for sid, lp in zip(src_ids[j], src_lp[j]):
            if sid >= 0 and vmap[sid] >= 0:
                dense[i, vmap[sid]] += np.exp(lp)
        if dense[i].sum() > 0:
            dense[i] /= dense[i].sum()
            moved[i] = True
    for i in np.flatnonzero(~moved):
        dense[i, gold[i]] = 1.0
    return dense, moved


def densify(ids, lp, v_t):
    dense = np.zeros((len(ids), v_t))
    for t in range(len(ids)):
        for tid, x in zip(ids[t], lp[t]):
            if tid >= 0:
                assert dense[t, tid] == 0, "a target id appears twice in one row"
                dense[t, tid] = np.exp(x)
            else:
                assert x == -np.inf
    return dense


def check_transfer(src_ids, src_lp, vmap, pairs, gold, v_t):
    ids, lp, moved = transfer_topk(src_ids, src_lp, vmap, pairs, gold)
    assert ids.shape == lp.shape == (len(gold), src_ids.shape[1])
    want, want_moved = dense_reference(src_ids, src_lp, vmap, pairs, gold, v_t)
    np.testing.assert_allclose(densify(ids, lp, v_t), want, rtol=1e-5, atol=1e-7)
    assert moved.tolist() == want_moved.tolist()
    assert np.all(lp[:, :-1] >= lp[:, 1:])  # sorted descending, padding (-inf) last
    return ids, lp, moved


def test_transfer_topk_crafted():
    vmap = np.array([0, 2, 2, -1, 4, 1])                      # source ids 1 and 2 land on target 2
    src_ids = np.array([[1, 2, 0], [4, 5, 0], [3, 3, 3], [5, 3, 4]])
    src_lp = np.log(np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.4, 0.4, 0.2], [0.5, 0.25, 0.25]]))
    gold = np.array([1, 3, 0, 2, 4])
    pairs = [(0, 1), (2, 3), (3, 4)]                            # shifted: source row j -> target row i
    ids, lp, moved = check_transfer(src_ids, src_lp, vmap, pairs, gold, 5)
    assert moved.tolist() == [False, True, False, False, True]  # row 3: every source id maps to -1
    assert ids[1].tolist() == [2, 0, -1] and np.allclose(np.exp(lp[1, :2]), [0.8, 0.2])
    assert ids[4].tolist() == [1, 4, -1] and np.allclose(np.exp(lp[4, :2]), [2 / 3, 1 / 3])  # -1 dropped
    for i in (0, 2, 3):                                         # one-hot of the gold token of row i
        assert ids[i].tolist() == [gold[i], -1, -1] and lp[i, 0] == 0 and np.all(lp[i, 1:] == -np.inf)


def test_transfer_topk_random_against_dense():
    rng = np.random.default_rng(1)
    v_s, v_t, k = 40, 25, 6
    vmap = rng.integers(-1, v_t, size=v_s)                     # many collisions and some -1
    for _ in range(20):
        t_s, t_t = rng.integers(1, 15), rng.integers(1, 15)
        src_ids = np.stack([rng.choice(v_s, size=k, replace=False) for _ in range(t_s)])
        logits = rng.normal(size=(t_s, k)) * 3
        src_lp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        src_ids[:, -1] = np.where(rng.random(t_s) < 0.3, -1, src_ids[:, -1])  # padded source entries
        src_lp[src_ids < 0] = -np.inf
        j = np.sort(rng.choice(t_s, size=min(t_s, t_t) // 2 + 1, replace=False))
        i = np.sort(rng.choice(t_t, size=len(j), replace=False))
        check_transfer(src_ids, src_lp, vmap, list(zip(j.tolist(), i.tolist())), rng.integers(0, v_t, t_t), v_t)


def test_transfer_topk_errors():
    ids, lp, gold = np.zeros((2, 3), dtype=int), np.zeros((2, 3)), np.zeros(4, dtype=int)
    vmap = np.arange(5)
    with pytest.raises(FusevalError, match="more than one pair"):
        transfer_topk(ids, lp, vmap, [(0, 1), (1, 1)], gold)
    with pytest.raises(FusevalError, match="out of range"):
        transfer_topk(ids, lp, vmap, [(2, 1)], gold)
    with pytest.raises(FusevalError, match=r"\[T, K\]"):
        transfer_topk(ids, lp[:, :2], vmap, [], gold)
    with pytest.raises(FusevalError, match="outside the vocabulary map"):
        transfer_topk(ids + 7, lp, vmap, [(0, 0)], gold)
