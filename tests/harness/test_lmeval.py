"""lm-eval on our local zoo tasks: the hf model against plain forward passes, and a vLLM server against hf."""

from __future__ import annotations

import importlib.util
import math
import os
import random

import pytest
import torch

from fusion.common.errors import FusevalError
from harness.run.lmeval import N_CHOICES, ZOO_GROUP, offline, run_lmeval, task_key, write_zoo_tasks, zoo_docs

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                reason="lm-eval is not installed (pip install 'fuseval[lmeval]')")

LIMIT = 4  # per category task: 5 x 4 = 20 questions in the group


@pytest.fixture(scope="module")
def hf_run(world, tmp_path_factory):
    work = tmp_path_factory.mktemp("lmeval")
    py, pt = random.getstate(), torch.random.get_rng_state()
    rows = run_lmeval(world / "pivot", [ZOO_GROUP], limit=LIMIT, work_dir=work)
    assert random.getstate() == py and torch.equal(torch.random.get_rng_state(), pt)  # lm-eval seeds; we restore
    return rows, work


def forward_pass_correct(model, tok, docs) -> list[tuple[bool, bool]]:
    """(acc, acc_norm) hits per doc: summed log-probs of ' ' + choice after the prompt, by plain forward passes.

    A doc's choices share one right-padded batch: in a causal model padding on the right cannot
    change the log-probs of the tokens before it.
    """
    hits = []
    for d in docs:
        context = f"Question: {d['question']}\nAnswer:"
        ctx = tok(context)["input_ids"]
        conts = [tok(" " + c)["input_ids"] for c in d["choices"]]
        for c, cont in zip(d["choices"], conts):
            assert tok(context + " " + c)["input_ids"] == ctx + cont  # the split is unambiguous
        width = len(ctx) + max(map(len, conts))
        ids = torch.tensor([ctx + cont + [tok.pad_token_id] * (width - len(ctx) - len(cont)) for cont in conts])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids, use_cache=False).logits.double(), -1)  # [choices, T, V]
        lls = [sum(float(logp[k, len(ctx) + i - 1, t]) for i, t in enumerate(cont)) for k, cont in enumerate(conts)]
        norm = [ll / len(c) for ll, c in zip(lls, d["choices"])]  # lm-eval's acc_norm: per character
        hits.append((max(range(len(lls)), key=lls.__getitem__) == d["gold"],
                     max(range(len(norm)), key=norm.__getitem__) == d["gold"]))
    return hits


def by_task(rows) -> dict[tuple[str, str], dict]:
    return {(r["task"], r["metric"]): r for r in rows}


def test_zoo_docs_are_deterministic_multiple_choice(tmp_path):
    docs = zoo_docs()
    assert docs == zoo_docs() and len(docs) == 5 and all(len(v) == 20 for v in docs.values())
    for ds in docs.values():
        assert {d["gold"] for d in ds} == set(range(N_CHOICES))
        for d in ds:
            assert len(set(d["choices"])) == N_CHOICES
    first = docs["arithmetic"][0]
    assert first["question"] == "Add 7 and 2." and first["choices"][first["gold"]] == "The sum is 9."
    names = write_zoo_tasks(tmp_path)
    assert names[0] == ZOO_GROUP and len(names) == 6
    data = tmp_path / "data" / f"{names[1]}.jsonl"
    assert str(data.resolve()) in (tmp_path / "tasks" / f"{names[1]}.yaml").read_text()
    before = data.stat().st_mtime_ns
    write_zoo_tasks(tmp_path)
    assert data.stat().st_mtime_ns == before  # unchanged data keeps the datasets cache valid


def test_hf_acc_matches_forward_passes(hf_run, world):
    rows, _ = hf_run
    got = by_task(rows)
    assert {r["metric"] for r in rows} == {"acc", "acc_norm"}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world / "pivot")
    model = AutoModelForCausalLM.from_pretrained(world / "pivot", dtype=torch.float32).eval()
    all_hits = []
    for cat, docs in zoo_docs().items():
        hits = forward_pass_correct(model, tok, docs[:LIMIT])
        all_hits += hits
        for j, metric in enumerate(("acc", "acc_norm")):
            r = got[(f"{ZOO_GROUP}_{cat}", metric)]
            p = sum(h[j] for h in hits) / LIMIT
            assert r["n"] == LIMIT and r["value"] == pytest.approx(p, abs=1e-12), (cat, metric)
            assert r["stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (LIMIT - 1)))  # sample sd / sqrt(n)
    for j, metric in enumerate(("acc", "acc_norm")):
        g = got[(ZOO_GROUP, metric)]
        assert g["n"] == 5 * LIMIT
        assert g["value"] == pytest.approx(sum(h[j] for h in all_hits) / len(all_hits), abs=1e-12)
        assert 0 < g["value"] < 1 and g["stderr"] > 0  # the tiny pivot is neither perfect nor hopeless
    assert all(0 <= r["value"] <= 1 and r["stderr"] is not None for r in rows)


def test_unknown_task_and_bad_inputs_are_clear_errors(world, tmp_path):
    with pytest.raises(FusevalError, match=r"unknown lm-eval task 'fuseval_nope'.*fuseval_zoo_arithmetic"):
        run_lmeval(world / "pivot", ["fuseval_nope"], work_dir=tmp_path)
    with pytest.raises(FusevalError, match="not a model directory"):
        run_lmeval(tmp_path / "missing", [ZOO_GROUP], work_dir=tmp_path)
    with pytest.raises(FusevalError, match="base_url"):
        run_lmeval(world / "pivot", [ZOO_GROUP], backend="vllm", work_dir=tmp_path)
    with pytest.raises(FusevalError, match="not supported"):
        run_lmeval(world / "pivot", [ZOO_GROUP], backend="tgi", work_dir=tmp_path)


@pytest.mark.slow
def test_unknown_builtin_task_is_a_clear_error(world, tmp_path):
    """A name outside our prefix is looked up among lm-eval's built-in tasks first (~15 s of indexing)."""
    with pytest.raises(FusevalError, match="unknown lm-eval task 'no_such_task_xyz'"):
        run_lmeval(world / "pivot", ["no_such_task_xyz"], work_dir=tmp_path)


def test_offline_is_restored(monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with offline():
        assert os.environ["HF_DATASETS_OFFLINE"] == os.environ["HF_HUB_OFFLINE"] == "1"
    assert "HF_DATASETS_OFFLINE" not in os.environ and os.environ["HF_HUB_OFFLINE"] == "0"


def test_task_key_is_stable():
    assert task_key(["a", "b"], 4, None) == task_key(["b", "a"], 4, None)
    keys = {task_key(["a"], 4, None), task_key(["a"], 5, None), task_key(["a"], 4, 0), task_key(["b"], 4, None)}
    assert len(keys) == 4


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_vllm_server_scores_equal_hf(hf_run, world, tmp_path):
    from harness.backends.vllm_server import VLLMBackend, VLLMOptions, vllm_available

    if not vllm_available():
        pytest.skip("vLLM is not installed (make test installs it)")
    hf_rows, work = hf_run
    # float32 as the hf model computes: vLLM's dtype "auto" serves a float32 checkpoint in bf16 on CPU, whose
    # log-likelihoods differ by up to ~0.2 nats, enough to flip a near-tie between two choices of a world model.
    with VLLMBackend(world / "pivot", VLLMOptions(dtype="float32"), log_dir=tmp_path / "logs",
                     model_id="pivot") as b:
        rows = run_lmeval(world / "pivot", [ZOO_GROUP], backend="vllm", base_url=b.server.base_url,
                          served_name="pivot", limit=LIMIT, work_dir=work)
    hf = by_task(hf_rows)
    assert by_task(rows).keys() == hf.keys()
    for key, r in by_task(rows).items():
        assert (r["value"], r["n"]) == (hf[key]["value"], hf[key]["n"]), key
        assert r["stderr"] == pytest.approx(hf[key]["stderr"])


def test_metrics_carry_a_bootstrap_interval_over_documents(hf_run):
    """lm-eval logs each document's result; every acc/acc_norm row gets a 95% bootstrap interval around it."""
    rows, _ = hf_run
    scored = [r for r in rows if r["metric"] in ("acc", "acc_norm")]
    assert scored and all(r["interval"] == "cluster bootstrap over the documents" for r in scored)
    assert all(r["low"] <= r["value"] <= r["high"] and r["high"] - r["low"] > 0 for r in scored if 0 < r["value"] < 1)
    group = next(r for r in scored if r["task"] == ZOO_GROUP and r["metric"] == "acc")
    assert group["n"] == 5 * LIMIT
