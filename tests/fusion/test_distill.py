"""Teacher extraction, sparse storage and fusion functions (fusion/distill.py), against dense numpy references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fusion import distill, zoo
from fusion.common.errors import FusevalError
from fusion.distill import (
    Candidate,
    TeacherRecord,
    TeacherStore,
    avg_ce,
    extract_teachers,
    min_ce,
    record_key,
    topk_probs,
)
from fusion.zoo import domains as D
from tests.reference import log_softmax64

# --- helpers and fixtures ----------------------------------------------------------------------

WORLD_MARKERS = ("<|assistant|>", "<|end|>")  # the tiny world's chat template
CHATML_MARKERS = ("<|im_start|>assistant\n", "<|im_end|>")  # SmolLM2's


def response_positions(tok, messages, markers=WORLD_MARKERS) -> tuple[np.ndarray, list[np.ndarray]]:
    """Token ids of the rendered chat and, per assistant turn, the indices of the tokens that start inside
    `content + close`, found after `open` by plain string search (independent of fusion.chat)."""
    opener, close = markers
    full = tok.apply_chat_template(messages, tokenize=False)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    starts = np.array([s for s, _ in enc["offset_mapping"]])
    per_turn, at = [], 0
    for m in messages:
        if m["role"] != "assistant":
            continue
        piece = opener + m["content"] + close
        at = full.index(piece, at)
        lo, hi = at + len(opener), at + len(piece)
        per_turn.append(np.flatnonzero((starts >= lo) & (starts < hi)))
        at = hi
    return np.array(enc["input_ids"]), per_turn


def dense_reference(model, tok, messages, k: int, max_len: int | None = None, markers=WORLD_MARKERS):
    """(ids [R, K], logprobs [R, K], gold [R], ce, turns) from one unpadded float64 log-softmax."""
    ids, per_turn = response_positions(tok, messages, markers)
    if max_len is not None:
        ids = ids[:max_len]
        per_turn = [t[t < max_len] for t in per_turn]
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids)[None]).logits[0].double().numpy()  # [T, V]
    resp = np.concatenate(per_turn)
    logp = log_softmax64(logits[resp - 1])  # row r: the distribution FOR response token r
    order = np.argsort(-logp, axis=1, kind="stable")[:, :k]
    gold = ids[resp]
    ce = float(-logp[np.arange(len(resp)), gold].mean())
    return order, np.take_along_axis(logp, order, 1), gold, ce, [len(t) for t in per_turn]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved 1-layer Llama with a byte-level BPE chat tokenizer; weights scaled up so distributions are peaked."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = zoo.train_bpe_tokenizer(D.corpus(sorted(D.DOMAINS), 50), 300, chat_template=zoo.WORLD_TEMPLATE)
    spec = zoo.ModelSpec(name="t", arch="llama", tokenizer="bpe", vocab_size=300, hidden=32, layers=1, heads=2,
                         intermediate=64, domains=["arithmetic"])
    cfg = AutoConfig.for_model(**{k: v for k, v in zoo.model_config(spec, tok).items() if k != "architectures"})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    path = tmp_path_factory.mktemp("teacher") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    from transformers import AutoModelForCausalLM

    from fusion.chat import load_tokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval(), load_tokenizer(tiny_dir)


@pytest.fixture(scope="module")
def convs():
    # Different domains, so lengths differ and batches are right-padded.
    return [c for d in ("arithmetic", "extraction", "code", "formatting") for c in D.generate(d, 2, 5, "train")]


def count_extracted(monkeypatch) -> list[int]:
    """Patch the transformers backend to record how many examples each call extracts."""
    calls: list[int] = []
    real = distill._extract_transformers

    def spy(model_dir, tok, encoded, k, **kw):
        calls.append(len(encoded))
        yield from real(model_dir, tok, encoded, k, **kw)

    monkeypatch.setattr(distill, "_extract_transformers", spy)
    return calls


def assert_same_record(a: TeacherRecord, b: TeacherRecord):
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=1e-3)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.ce == pytest.approx(b.ce, rel=1e-5)
    assert a.turns == b.turns


# --- topk_probs ---------------------------------------------------------------------------------

def test_topk_probs_is_tempered_softmax_over_finite_entries():
    rng = np.random.default_rng(0)
    lp = rng.normal(-3, 2, size=(5, 6))
    lp[1, 4:] = -np.inf  # padding
    lp[3, :] = -np.inf  # all padding
    for tau in (1.0, 0.5, 2.0):
        got = topk_probs(lp, tau)
        for r in range(5):
            fin = np.isfinite(lp[r])
            want = np.zeros(6)
            if fin.any():
                e = np.exp(lp[r, fin] / tau)
                want[fin] = e / e.sum()
            np.testing.assert_allclose(got[r], want, rtol=1e-12, atol=1e-15)
        assert np.all(got[1, 4:] == 0) and np.all(got[3] == 0)
        assert np.all(np.isfinite(got))


def test_topk_probs_float16_input_and_extreme_values():
    lp = np.array([[-1000.0, -1001.0, -np.inf]])  # exp underflows without the max shift
    np.testing.assert_allclose(topk_probs(lp), [[1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1)), 0.0]])
    lp16 = np.array([[-0.5, -1.5, -np.inf]], np.float16)
    got = topk_probs(lp16.astype(np.float32))
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-6)


# --- min_ce / avg_ce ----------------------------------------------------------------------------

def cand(ids, probs, ce):
    return Candidate(np.array(ids, np.int64), np.array(probs, np.float64), ce)


def test_min_ce_picks_lowest_and_never_nan():
    a = cand([[1, 2]], [[0.6, 0.4]], 2.0)
    b = cand([[3, 4]], [[0.9, 0.1]], 0.7)
    c = cand([[5, 6]], [[0.5, 0.5]], float("nan"))
    ids, probs, w = min_ce([a, b, c])
    assert ids is b.ids and probs is b.probs
    np.testing.assert_array_equal(w, [0, 1, 0])
    # A NaN CE (e.g. no response token) is never picked, even first in the list.
    ids, _, w = min_ce([c, a])
    assert ids is a.ids
    np.testing.assert_array_equal(w, [0, 1])
    # Ties: the first candidate (the pivot comes first).
    _, _, w = min_ce([cand([[1, 2]], [[1, 0]], 1.0), cand([[3, 4]], [[1, 0]], 1.0)])
    np.testing.assert_array_equal(w, [1, 0])
    assert distill.FUSION_FUNCTIONS["min_ce"] is min_ce


def dense_avg_ce(cands, k, vocab):
    ces = np.array([c.ce for c in cands])
    w = np.array([0.0 if np.isnan(x) else np.exp(-x) for x in ces])
    w /= w.sum()
    rows = cands[0].ids.shape[0]
    dense = np.zeros((rows, vocab))
    for c, wi in zip(cands, w):
        for r in range(rows):
            for i, p in zip(c.ids[r], c.probs[r]):
                if i >= 0:
                    dense[r, i] += wi * p
    seen = np.zeros((rows, vocab), bool)
    for c in cands:
        for r in range(rows):
            seen[r, c.ids[r][c.ids[r] >= 0]] = True
    ids = np.argsort(np.where(seen, -dense, np.inf), axis=1, kind="stable")[:, :k]
    p = np.take_along_axis(dense, ids, 1)
    p = p / p.sum(1, keepdims=True)
    absent = ~np.take_along_axis(seen, ids, 1)  # fewer distinct ids than k: padding
    return np.where(absent, -1, ids), np.where(absent, 0.0, p), w


def test_avg_ce_matches_dense_mixture():
    rng = np.random.default_rng(3)
    vocab, rows, k = 12, 7, 4
    cands = []
    for ce in (0.4, 1.3, 2.2):
        ids = np.stack([rng.choice(vocab, k, replace=False) for _ in range(rows)])
        probs = rng.dirichlet(np.ones(k), size=rows)
        ids[2, 3], probs[2, 3] = -1, 0.0  # padding entries
        probs[2] /= probs[2].sum()
        cands.append(Candidate(ids, probs, ce))
    got_ids, got_p, w = avg_ce(cands)
    want_ids, want_p, want_w = dense_avg_ce(cands, k, vocab)
    np.testing.assert_allclose(w, want_w, rtol=1e-12)
    np.testing.assert_allclose(w, np.exp(-np.array([0.4, 1.3, 2.2])) / np.exp(-np.array([0.4, 1.3, 2.2])).sum())
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_p, want_p, rtol=1e-12)
    np.testing.assert_allclose(got_p.sum(1), 1.0)
    # A larger k keeps more of the mixture.
    ids6, p6, _ = avg_ce(cands, k=6)
    want6_ids, want6_p, _ = dense_avg_ce(cands, 6, vocab)
    np.testing.assert_array_equal(ids6, want6_ids)
    np.testing.assert_allclose(p6, want6_p, rtol=1e-12)
    assert distill.FUSION_FUNCTIONS["avg_ce"] is avg_ce


def test_avg_ce_sums_shared_ids_and_pads_short_rows():
    a = cand([[7, 3, -1]], [[0.5, 0.5, 0.0]], 1.0)
    b = cand([[3, 9, -1]], [[0.75, 0.25, 0.0]], 1.0)
    ids, p, w = avg_ce([a, b])
    np.testing.assert_allclose(w, [0.5, 0.5])
    # mass: id 3: .25 + .375 = .625, id 7: .25, id 9: .125 (sums to 1 already)
    np.testing.assert_array_equal(ids, [[3, 7, 9]])
    np.testing.assert_allclose(p, [[0.625, 0.25, 0.125]])
    # Fewer distinct ids than k: the rest is padding (−1, 0).
    ids, p, _ = avg_ce([cand([[4, -1]], [[1.0, 0.0]], 1.0), cand([[4, -1]], [[1.0, 0.0]], 3.0)])
    np.testing.assert_array_equal(ids, [[4, -1]])
    np.testing.assert_allclose(p, [[1.0, 0.0]])


def test_avg_ce_nan_ce_gets_zero_weight():
    a = cand([[1, 2]], [[0.5, 0.5]], 1.0)
    b = cand([[3, 4]], [[0.9, 0.1]], float("nan"))
    ids, p, w = avg_ce([a, b])
    np.testing.assert_allclose(w, [1.0, 0.0])
    np.testing.assert_array_equal(ids, [[1, 2]])
    np.testing.assert_allclose(p, [[0.5, 0.5]])


# --- extract_teachers ---------------------------------------------------------------------------

def test_extract_matches_dense_reference(tiny_dir, loaded, convs, tmp_path):
    from fusion.chat import encode_chat

    model, tok = loaded
    k = 10
    store = extract_teachers(tiny_dir, convs, tmp_path / "t", top_k=k, batch_size=3, shard_examples=5)
    assert len(store) == len(convs)
    assert [len(sh["qids"]) for sh in store.index["shards"]] == [5, 3]
    assert store.index["top_k"] == k and store.index["truncated"] == 0
    for c in convs:
        rec = store.get(record_key(c))
        ids, lp, gold, ce, turns = dense_reference(model, tok, c.messages, k)
        assert rec.ids.dtype == np.int32 and rec.ids.shape == (len(gold), k)
        np.testing.assert_array_equal(rec.ids, ids)
        np.testing.assert_allclose(rec.logprobs, lp, rtol=1e-3, atol=0)
        np.testing.assert_array_equal(rec.tokens, gold)
        assert rec.ce == pytest.approx(ce, rel=1e-5)
        assert rec.turns == turns and sum(rec.turns) == len(rec.ids)
        # The response tokens are the assistant contents plus the end marker, turn by turn.
        text = "".join(m["content"] + "<|end|>" for m in c.messages if m["role"] == "assistant")
        assert tok.decode(rec.tokens.tolist()) == text
        # Same positions as encode_chat finds.
        eids, resp, _ = encode_chat(tok, c.messages)
        np.testing.assert_array_equal(rec.tokens, eids[resp])
    # Fresh store from disk reads the same.
    again = TeacherStore(tmp_path / "t")
    assert_same_record(again.get(record_key(convs[3])), store.get(record_key(convs[3])))
    with pytest.raises(FusevalError, match="no teacher record"):
        again.get("nope")


def test_extract_resumes_only_new_examples(tiny_dir, convs, tmp_path, monkeypatch):
    calls = count_extracted(monkeypatch)
    out = tmp_path / "t"
    first = extract_teachers(tiny_dir, convs[:4], out, top_k=5, shard_examples=2)
    assert calls == [2, 2] and len(first.index["shards"]) == 2
    before = {record_key(c): first.get(record_key(c)) for c in convs[:4]}
    store = extract_teachers(tiny_dir, convs, out, top_k=5, shard_examples=2)
    assert calls == [2, 2, 2, 2]  # only the 4 new examples
    assert len(store) == len(convs) and len(store.index["shards"]) == 4
    assert len(list(out.glob("shard-*.safetensors"))) == 4
    for q, rec in before.items():
        assert_same_record(store.get(q), rec)
    extract_teachers(tiny_dir, convs, out, top_k=5, shard_examples=2)
    assert calls == [2, 2, 2, 2]  # nothing left to do


def test_corrupt_shard_is_dropped_and_reextracted(tiny_dir, convs, tmp_path, monkeypatch):
    calls = count_extracted(monkeypatch)
    out = tmp_path / "t"
    store = extract_teachers(tiny_dir, convs[:6], out, top_k=5, shard_examples=2)
    before = {record_key(c): store.get(record_key(c)) for c in convs[:6]}
    index = json.loads((out / "index.json").read_text())
    victim = out / index["shards"][1]["file"]
    data = bytearray(victim.read_bytes())
    for i in range(len(data) - 40, len(data) - 8):  # flip bytes in the tensor data
        data[i] ^= 0xFF
    victim.write_bytes(bytes(data))
    lost = TeacherStore(out).verify()
    assert lost == [record_key(c) for c in convs[2:4]]
    assert [sh["qids"] for sh in json.loads((out / "index.json").read_text())["shards"]] == \
        [[record_key(c) for c in convs[0:2]], [record_key(c) for c in convs[4:6]]]
    calls.clear()
    store = extract_teachers(tiny_dir, convs[:6], out, top_k=5, shard_examples=2)
    assert calls == [2]
    assert len(store) == 6
    for q, rec in before.items():
        assert_same_record(store.get(q), rec)
    assert TeacherStore(out).verify() == []
    # A missing shard file is treated the same way.
    (out / store.index["shards"][0]["file"]).unlink()
    assert TeacherStore(out).verify() == [record_key(c) for c in convs[0:2]]


def test_corrupt_index_is_a_user_error(tmp_path):
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(FusevalError, match="corrupt teacher index"):
        TeacherStore(tmp_path)


def test_truncation_is_counted_and_rows_dropped(tiny_dir, loaded, convs, tmp_path):
    model, tok = loaded
    c = convs[0]
    full_ids, per_turn = response_positions(tok, c.messages)
    limit = int(per_turn[1][2]) + 1  # keep the first turn and three tokens of the second
    assert len(full_ids) > limit
    store = extract_teachers(tiny_dir, convs[:3], tmp_path / "t", top_k=4, max_len=limit, shard_examples=3)
    long = [x for x in convs[:3] if len(response_positions(tok, x.messages)[0]) > limit]
    assert store.index["truncated"] == len(long) >= 1
    rec = store.get(record_key(c))
    ids, lp, gold, ce, turns = dense_reference(model, tok, c.messages, 4, max_len=limit)
    assert len(rec.ids) == len(per_turn[0]) + 3 < sum(map(len, per_turn))
    assert rec.turns == turns == [len(per_turn[0]), 3]
    np.testing.assert_array_equal(rec.ids, ids)
    np.testing.assert_allclose(rec.logprobs, lp, rtol=1e-3)
    np.testing.assert_array_equal(rec.tokens, gold)
    assert rec.ce == pytest.approx(ce, rel=1e-5)


def test_truncation_count_survives_reextraction(tiny_dir, convs, tmp_path):
    out = tmp_path / "t"
    store = extract_teachers(tiny_dir, convs[:2], out, top_k=4, max_len=12, shard_examples=1)
    assert store.index["truncated"] == 2
    victim = out / store.index["shards"][0]["file"]
    victim.write_bytes(victim.read_bytes()[:-4] + b"\0\0\0\0")
    store = extract_teachers(tiny_dir, convs[:2], out, top_k=4, max_len=12, shard_examples=1)
    assert len(store) == 2
    assert store.index["truncated"] == 2  # still two truncated examples in the store


def test_unknown_backend(tiny_dir, convs, tmp_path):
    with pytest.raises(FusevalError, match="unknown teacher backend"):
        extract_teachers(tiny_dir, convs[:1], tmp_path / "t", backend="onnx")


def test_shard_storage_is_sparse(tiny_dir, convs, tmp_path):
    from safetensors import safe_open

    k = 10
    store = extract_teachers(tiny_dir, convs, tmp_path / "t", top_k=k)
    [shard] = store.index["shards"]
    path = tmp_path / "t" / shard["file"]
    rows = sum(len(store.get(record_key(c)).tokens) for c in convs)
    n_turns = sum(len(store.get(record_key(c)).turns) for c in convs)
    with safe_open(str(path), "np") as f:
        dtypes = {name: f.get_tensor(name).dtype for name in f.keys()}
    assert dtypes["ids"] == np.int32 and dtypes["logprobs"] == np.float16
    # Exact payload: ids int32 + logprobs float16 per entry, tokens int32 per row, small per-example arrays.
    payload = rows * k * (4 + 2) + rows * 4 + (len(convs) + 1) * 8 + len(convs) * (4 + 8) + n_turns * 8
    raw = path.read_bytes()
    header = int.from_bytes(raw[:8], "little")
    assert len(raw) == 8 + header + payload
    vocab = json.loads((tiny_dir / "config.json").read_text())["vocab_size"]
    assert len(raw) < 0.1 * rows * vocab * 4  # dense float32 [R, V] targets would be >10x larger


def test_resume_with_other_top_k_is_refused(tiny_dir, convs, tmp_path):
    out = tmp_path / "t"
    extract_teachers(tiny_dir, convs[:2], out, top_k=5)
    with pytest.raises(FusevalError):
        extract_teachers(tiny_dir, convs[:4], out, top_k=10)
