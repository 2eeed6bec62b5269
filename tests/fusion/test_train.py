"""The fusion training loop (fusion/train.py): loss, batching, schedule and resumable checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusion import train as T
from fusion import zoo
from fusion.common.errors import FusevalError
from fusion.conversations import encode_conversations
from fusion.train import (
    Example,
    TrainConfig,
    batch_order,
    collate,
    fusion_loss,
    latest_checkpoint,
    lr_at,
    train,
    truncate,
)
from fusion.zoo import domains as D
from tests.reference import log_softmax64


def crafted_examples() -> list[Example]:
    """Three examples of different lengths: teacher K=3 (with −1 padding), teacher K=2, no teacher."""
    return [
        Example(np.array([5, 1, 7, 2, 9, 3, 4]), np.array([0, 3, 4, 5]),
                np.array([[1, 2, 3], [7, -1, -1], [0, 8, 9], [4, 5, -1]]),
                np.array([[.5, .3, .2], [1., 0., 0.], [.2, .2, .6], [.9, .1, 0.]])),
        Example(np.array([3, 3, 8, 1, 6]), np.array([2, 3, 4]),
                np.array([[8, 1], [1, 6], [2, -1]]), np.array([[.7, .3], [.4, .6], [1., 0.]])),
        Example(np.array([9, 8, 7, 6, 5, 4]), np.array([4, 5])),
    ]


def reference_loss(logits: np.ndarray, examples: list[Example], lam: float) -> float:
    """Per response token r ≥ 1: λ·(−log q(ids[r])) + (1−λ)·(−Σ p_k log q(id_k)), q from logits[r − 1]; mean."""
    terms = []
    for b, ex in enumerate(examples):
        for j, r in enumerate(ex.resp_pos):
            if r < 1:
                continue
            logq = log_softmax64(logits[b, r - 1])
            gold = -logq[ex.input_ids[r]]
            teach = 0.0
            if ex.teacher_ids is not None:
                teach = -sum(p * logq[i] for i, p in zip(ex.teacher_ids[j], ex.teacher_probs[j]) if i >= 0)
            terms.append(lam * gold + (1 - lam) * teach)
    return float(np.mean(terms))


# --- collate / fusion_loss / truncate -----------------------------------------------------------

def test_collate_pads_and_locates_response_tokens():
    exs = crafted_examples()
    b = collate(exs, pad_id=99)
    assert b["input_ids"].tolist() == [[5, 1, 7, 2, 9, 3, 4], [3, 3, 8, 1, 6, 99, 99], [9, 8, 7, 6, 5, 4, 99]]
    assert b["attention_mask"].tolist() == [[1] * 7, [1] * 5 + [0] * 2, [1] * 6 + [0]]
    # resp_pos 0 of example 0 is skipped (nothing predicts the first token).
    assert b["rows"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert b["pred"].tolist() == [2, 3, 4, 1, 2, 3, 3, 4]
    assert b["gold"].tolist() == [2, 9, 3, 8, 1, 6, 5, 4]
    assert b["teacher_ids"].tolist() == [[7, -1, -1], [0, 8, 9], [4, 5, -1],  # example 0 without its row 0
                                         [8, 1, -1], [1, 6, -1], [2, -1, -1],  # example 1, K=2 padded to 3
                                         [-1, -1, -1], [-1, -1, -1]]  # example 2: no teacher
    np.testing.assert_allclose(b["teacher_probs"].numpy()[:6], [[1, 0, 0], [.2, .2, .6], [.9, .1, 0],
                                                               [.7, .3, 0], [.4, .6, 0], [1, 0, 0]], rtol=1e-6)
    assert np.all(b["teacher_probs"].numpy()[6:] == 0)
    # A batch without any teacher still has [N, 1] teacher arrays.
    b = collate([Example(np.array([1, 2, 3]), np.array([1, 2]))], pad_id=0)
    assert tuple(b["teacher_ids"].shape) == (2, 1) and b["teacher_ids"].tolist() == [[-1], [-1]]


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9, 1.0])
def test_fusion_loss_matches_dense_reference(lam):
    exs = crafted_examples()
    logits = np.random.default_rng(7).normal(0, 2, size=(3, 7, 10))
    loss, parts = fusion_loss(torch.tensor(logits, dtype=torch.float32), collate(exs, pad_id=0), lam)
    assert loss.item() == pytest.approx(reference_loss(logits, exs, lam), rel=1e-5)
    assert parts["ce_gold"] == pytest.approx(reference_loss(logits, exs, 1.0), rel=1e-5)
    if lam < 1:
        assert parts["ce_teacher"] == pytest.approx(reference_loss(logits, exs, 0.0), rel=1e-5)
    else:
        assert "ce_teacher" not in parts


def test_fusion_loss_lambda_one_ignores_teachers_and_gradient_is_softmax_minus_target():
    exs = crafted_examples()
    no_teacher = [Example(e.input_ids, e.resp_pos) for e in exs]
    logits = torch.tensor(np.random.default_rng(1).normal(size=(3, 7, 10)), dtype=torch.float32, requires_grad=True)
    a, _ = fusion_loss(logits, collate(exs, 0), 1.0)
    b, _ = fusion_loss(logits, collate(no_teacher, 0), 1.0)
    assert a.item() == b.item()
    # d loss / d logits at a predicting position = (softmax − target) / N, target = λ·onehot + (1−λ)·P.
    lam = 0.4
    loss, _ = fusion_loss(logits, collate(exs, 0), lam)
    loss.backward()
    g = logits.grad.numpy()
    x = logits.detach().numpy().astype(np.float64)
    n = 8
    want = np.zeros_like(x)
    for bi, ex in enumerate(exs):
        for j, r in enumerate(ex.resp_pos):
            if r < 1:
                continue
            target = np.zeros(10)
            target[ex.input_ids[r]] += lam
            if ex.teacher_ids is not None:
                for i, p in zip(ex.teacher_ids[j], ex.teacher_probs[j]):
                    if i >= 0:
                        target[i] += (1 - lam) * p
            q = np.exp(log_softmax64(x[bi, r - 1]))
            # the softmax term scales with the target's total mass (1 with a full teacher, λ without)
            want[bi, r - 1] = (q * target.sum() - target) / n
    np.testing.assert_allclose(g, want, atol=1e-6)


def test_truncate_drops_response_tokens_and_teacher_rows():
    exs = crafted_examples()
    out, cut = truncate(exs, 5)
    assert cut == 2  # lengths 7 and 6 are cut, 5 is kept
    assert out[1] is exs[1]
    assert out[0].input_ids.tolist() == [5, 1, 7, 2, 9]
    assert out[0].resp_pos.tolist() == [0, 3, 4]
    assert out[0].teacher_ids.tolist() == [[1, 2, 3], [7, -1, -1], [0, 8, 9]]
    np.testing.assert_allclose(out[0].teacher_probs, exs[0].teacher_probs[:3])
    assert out[2].input_ids.tolist() == [9, 8, 7, 6, 5] and out[2].resp_pos.tolist() == [4]
    assert out[2].teacher_ids is None
    assert truncate(exs, 7) == (exs, 0)


# --- schedule and data order --------------------------------------------------------------------

def test_lr_at_warmup_then_cosine():
    cfg = TrainConfig(steps=110, warmup=10, lr=2e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(2e-4)
    assert lr_at(4, cfg) == pytest.approx(1e-3)
    assert lr_at(9, cfg) == pytest.approx(2e-3)
    assert lr_at(10, cfg) == pytest.approx(2e-3)  # the cosine starts at the peak
    assert lr_at(60, cfg) == pytest.approx(2e-3 * (0.1 + 0.9 * 0.5))  # halfway
    assert lr_at(35, cfg) == pytest.approx(2e-3 * (0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2))
    assert lr_at(110, cfg) == pytest.approx(2e-4)  # min_lr_ratio at the end
    assert lr_at(500, cfg) == pytest.approx(2e-4)
    lrs = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lr_at(0, TrainConfig(steps=5, warmup=0, lr=1.0)) == pytest.approx(1.0)


@pytest.mark.parametrize("n,bs,accum", [(10, 3, 2), (4, 3, 2), (7, 7, 1)])
def test_batch_order_epochs_are_permutations(n, bs, accum):
    cfg = TrainConfig(batch_size=bs, grad_accum=accum, seed=3)
    per_step = bs * accum
    stream = [i for s in range(3 * n) for i in batch_order(n, s, cfg)]
    assert all(len(batch_order(n, s, cfg)) == per_step for s in range(5))
    for e in range(len(stream) // n):  # every example exactly once per epoch
        assert sorted(stream[e * n:(e + 1) * n]) == list(range(n))
    assert [batch_order(n, s, cfg) for s in range(6)] == [batch_order(n, s, cfg) for s in range(6)]
    other = TrainConfig(batch_size=bs, grad_accum=accum, seed=4)
    assert [i for s in range(3 * n) for i in batch_order(n, s, other)] != stream
    # Epochs differ from each other.
    assert stream[:n] != stream[n:2 * n] or stream[n:2 * n] != stream[2 * n:3 * n]


# --- train ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world():
    """A BPE chat tokenizer and gold examples of two domains, with random sparse teachers attached."""
    tok = zoo.train_bpe_tokenizer(D.corpus(["arithmetic", "comparison"], 50), 300, chat_template=zoo.WORLD_TEMPLATE)
    convs = [c for d in ("arithmetic", "comparison") for c in D.generate(d, 12, 0, "train")]
    exs = encode_conversations(tok, convs)
    rng = np.random.default_rng(0)
    for ex in exs:
        r = len(ex.resp_pos)
        ex.teacher_ids = np.stack([rng.choice(len(tok), 4, replace=False) for _ in range(r)])
        ex.teacher_probs = rng.dirichlet(np.ones(4), size=r)
    return tok, exs


def make_model(tok, seed: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = zoo.ModelSpec(name="t", arch="llama", tokenizer="bpe", vocab_size=300, hidden=32, layers=1, heads=2,
                         intermediate=64, domains=["arithmetic"])
    cfg = AutoConfig.for_model(**{k: v for k, v in zoo.model_config(spec, tok).items() if k != "architectures"})
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


def params(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def test_train_lowers_the_loss(world):
    tok, exs = world
    model = make_model(tok, 0)
    cfg = TrainConfig(steps=40, batch_size=8, lr=1e-2, warmup=4, lam=1.0, max_len=64)
    out = train(model, exs, cfg, pad_id=tok.pad_token_id)
    assert out["resumed_at"] == 0 and out["truncated"] == 0 and len(out["losses"]) == 40
    assert np.mean(out["losses"][-5:]) < 0.5 * np.mean(out["losses"][:3])
    # The summary's loss is the real gold CE of the model on a batch (recomputed independently).
    batch = collate(exs, tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double().numpy()
    ref = reference_loss(logits, exs, 1.0)
    assert ref < 0.6 * out["losses"][0]
    assert not model.training


def test_train_counts_truncated_examples(world):
    tok, exs = world
    cfg = TrainConfig(steps=1, batch_size=4, max_len=20, lam=1.0)
    out = train(make_model(tok, 0), exs, cfg, pad_id=tok.pad_token_id)
    assert out["truncated"] == sum(len(e.input_ids) > 20 for e in exs) > 0


def test_resume_after_kill_equals_uninterrupted_run(world, tmp_path, monkeypatch):
    tok, exs = world
    cfg = TrainConfig(steps=6, batch_size=4, grad_accum=2, lr=5e-3, warmup=2, lam=0.6, checkpoint_every=3,
                      max_len=64, seed=1)
    a = make_model(tok, 0)
    train(a, exs, cfg, tmp_path / "a", tokenizer=tok, pad_id=tok.pad_token_id)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["checkpoint-6"]  # only the newest is kept

    class Killed(Exception):
        pass

    real = T._save_checkpoint

    def save_then_die(out_dir, step, *args, **kw):
        path = real(out_dir, step, *args, **kw)
        if step == 3:
            raise Killed
        return path

    monkeypatch.setattr(T, "_save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(make_model(tok, 0), exs, cfg, tmp_path / "b", tokenizer=tok, pad_id=tok.pad_token_id)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path / "b").name == "checkpoint-3"
    c = make_model(tok, 123)  # a fresh instance with other weights: everything must come from the checkpoint
    out = train(c, exs, cfg, tmp_path / "b", tokenizer=tok, pad_id=tok.pad_token_id)
    assert out["resumed_at"] == 3 and len(out["losses"]) == 3
    pa, pc = params(a), params(c)
    assert pa.keys() == pc.keys()
    for k in pa:
        np.testing.assert_allclose(pc[k], pa[k], atol=1e-5, rtol=0, err_msg=k)
    # The model moved: resuming is not trivially equal to the start.
    assert max(np.abs(pa[k] - params(make_model(tok, 0))[k]).max() for k in pa) > 1e-3
    # Checkpoints are safetensors + JSON (and the tokenizer's text files): no pickle anywhere.
    ckpt = tmp_path / "b" / "checkpoint-6"
    files = [p for p in ckpt.rglob("*") if p.is_file()]
    assert {"model.safetensors", "trainer_state.safetensors", "trainer_state.json", "config.json",
            "tokenizer.json"} <= {p.name for p in files}
    for p in files:
        assert p.suffix in {".safetensors", ".json", ".jinja"}, p.name
        head = p.read_bytes()[:2]
        assert head != b"PK" and head[:1] != b"\x80", p.name  # neither torch.save zip nor raw pickle
    # A completed run with the same out_dir does nothing more.
    again = make_model(tok, 5)
    out = train(again, exs, cfg, tmp_path / "b", pad_id=tok.pad_token_id)
    assert out["resumed_at"] == 6 and out["losses"] == []
    for k in pa:
        np.testing.assert_allclose(params(again)[k], pa[k], atol=1e-5, rtol=0)


def test_grad_accumulation_equals_one_big_batch():
    """With equal token counts per micro-batch, 2 × 4 accumulated equals 1 × 8 (same data order)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    rng = np.random.default_rng(2)
    exs = [Example(rng.integers(0, 50, 12), np.arange(6, 12)) for _ in range(16)]

    def run(bs, accum):
        torch.manual_seed(0)
        m = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
        train(m, exs, TrainConfig(steps=3, batch_size=bs, grad_accum=accum, lr=1e-2, warmup=1, lam=1.0))
        return params(m)

    big, acc = run(8, 1), run(4, 2)
    for k in big:
        np.testing.assert_allclose(acc[k], big[k], atol=1e-5, rtol=0, err_msg=k)


def test_train_errors(world):
    tok, exs = world
    with pytest.raises(FusevalError, match="no training examples"):
        train(make_model(tok, 0), [], TrainConfig(steps=1))
    empty = [Example(e.input_ids, np.zeros(0, np.int64)) for e in exs[:3]]
    with pytest.raises(FusevalError, match="no example has a response token"):
        train(make_model(tok, 0), empty, TrainConfig(steps=1))
    # Truncation that removes every response token is the same error.
    with pytest.raises(FusevalError, match="no example has a response token"):
        train(make_model(tok, 0), exs[:3], TrainConfig(steps=1, max_len=8))
    with pytest.raises(ValueError):
        TrainConfig(steps=1, bogus=3)  # unknown keys are errors


def test_examples_without_response_tokens_do_not_poison_training(world):
    tok, exs = world
    # The second example loses all its response tokens to truncation (a long prompt), the first keeps them.
    long_prompt = Example(np.concatenate([np.full(70, 5), exs[1].input_ids]), exs[1].resp_pos + 70)
    model = make_model(tok, 0)
    out = train(model, [exs[0], long_prompt], TrainConfig(steps=4, batch_size=1, max_len=64, lam=1.0),
                pad_id=tok.pad_token_id)
    assert out["truncated"] == 1
    assert all(np.isfinite(v).all() for v in params(model).values())  # (holds: the empty batch's gradient is 0)
    assert np.isfinite(out["final_loss"]) and all(np.isfinite(out["losses"]))
