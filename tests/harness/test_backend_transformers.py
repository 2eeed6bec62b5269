"""The in-process transformers backend on the tiny world's models, against plain forward passes."""

from __future__ import annotations

import shutil

import pytest
import torch

from fusion.chat import end_token_ids, load_tokenizer
from fusion.common.errors import FusevalError
from harness.backends import ChatRequest, GenParams, TransformersBackend, TransformersOptions
from harness.backends.hf import _RowSampler
from harness.formats.questions import load_questions, resolve_bench


def manual_greedy(model, tok, messages, max_new_tokens):
    """One prompt, no batching, no generate(): argmax of a full forward pass, token by token."""
    ids = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False)["input_ids"]
    stops, out, lps = end_token_ids(tok), [], []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(torch.tensor([ids + out])).logits[0, -1].float()
        t = int(logits.argmax())
        lps.append(float(torch.log_softmax(logits, -1)[t]))
        if t in stops:
            break
        out.append(t)
    return tok.decode(out, skip_special_tokens=True), lps


@pytest.fixture(scope="module")
def pivot(world):
    b = TransformersBackend(world / "pivot", TransformersOptions(batch_size=8, device="cpu"))
    with b:
        yield b


def zoo_messages(n=24):
    return [[{"role": "user", "content": q.turns[0]}] for q in load_questions(resolve_bench("zoo"))[::100 // n][:n]]


def test_greedy_batched_equals_manual_forward(pivot):
    msgs = zoo_messages()
    res = pivot.generate([ChatRequest(m, GenParams(max_new_tokens=20)) for m in msgs])
    for m, r in zip(msgs, res):
        text, lps = manual_greedy(pivot.model, pivot.tok, m, 20)
        assert r.ok and r.text == text
        assert r.completion_tokens == len(lps) and r.prompt_tokens > 0
    assert any(r.finish_reason == "stop" for r in res)


def test_logprobs_are_the_models_log_softmax(pivot):
    msgs = zoo_messages(3)
    for m in msgs:
        lps = pivot.logprobs(m, top_k=4, max_new_tokens=8)
        _, ref = manual_greedy(pivot.model, pivot.tok, m, 8)
        n = min(len(lps), len(ref))
        assert n > 0
        assert [x.logprob for x in lps[:n]] == pytest.approx(ref[:n], abs=1e-4)
        for x in lps:
            assert len(x.top) == 4 and max(x.top.values()) == pytest.approx(x.logprob, abs=1e-5)  # greedy: top-1


def test_sampled_answers_depend_on_their_seed_only(pivot):
    msgs = zoo_messages(8)
    reqs = [ChatRequest(m, GenParams(temperature=1.5, max_new_tokens=12, seed=100 + i)) for i, m in enumerate(msgs)]
    together = [r.text for r in pivot.generate(reqs)]
    alone = [pivot.generate([r])[0].text for r in reversed(reqs)][::-1]
    assert together == alone
    other = [r.text for r in pivot.generate([ChatRequest(r.messages, r.params.model_copy(update={"seed": 7}))
                                             for r in reqs])]
    assert other != together


def test_row_sampler_draws_from_the_tempered_nucleus():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    temp, top_p, n = 0.8, 0.9, 20000
    p = torch.softmax(logits / temp, 0)
    keep = (p.sort(descending=True).values.cumsum(0) - p.sort(descending=True).values) < top_p
    expect = torch.zeros(5)
    expect[p.sort(descending=True).indices[keep]] = p.sort(descending=True).values[keep]
    expect /= expect.sum()
    sampler = _RowSampler([GenParams(temperature=temp, top_p=top_p, seed=1)], torch.device("cpu"))
    counts = torch.zeros(5)
    for _ in range(n):
        counts[int(sampler(None, logits.clone()[None]).argmax())] += 1
    assert torch.allclose(counts / n, expect, atol=0.012)
    assert counts[expect == 0].sum() == 0
    greedy = _RowSampler([GenParams()], torch.device("cpu"))
    assert torch.equal(greedy(None, logits.clone()[None])[0], logits)  # greedy rows are left alone


def test_each_request_gets_the_room_its_own_prompt_leaves(pivot):
    short = zoo_messages(4)
    long = [{"role": "user", "content": "Add 1 and 2. " * 20}]  # a long prompt: less room left in the context
    reqs = [ChatRequest(m, GenParams(max_new_tokens=1024, temperature=1.0, seed=3)) for m in [*short, long]]
    together = pivot.generate(reqs)
    alone = [pivot.generate([r])[0] for r in reqs]
    assert [r.text for r in together] == [r.text for r in alone] and all(r.ok for r in together)
    n_long = len(pivot.tok(pivot.tok.apply_chat_template(long, tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False)["input_ids"])
    assert together[-1].completion_tokens <= 256 - n_long


def test_max_new_tokens_stop_strings_and_context_overflow(pivot):
    m = zoo_messages(1)[0]
    (r,) = pivot.generate([ChatRequest(m, GenParams(max_new_tokens=2))])
    assert r.completion_tokens <= 2 and r.finish_reason == "length"
    full = pivot.generate([ChatRequest(m, GenParams(max_new_tokens=20))])[0].text
    cut = pivot.generate([ChatRequest(m, GenParams(max_new_tokens=20, stop=(full.split()[1],)))])[0]
    assert cut.text == full[:full.index(full.split()[1])] and cut.finish_reason == "stop"
    long = [{"role": "user", "content": "word " * 2000}]
    bad, good = pivot.generate([ChatRequest(long), ChatRequest(m, GenParams(max_new_tokens=4))])
    assert not bad.ok and "does not fit the model's context of 256" in bad.error and good.ok


def test_missing_chat_template_is_a_clear_error_and_a_file_fixes_it(world, tmp_path):
    model = tmp_path / "no-template"
    shutil.copytree(world / "pivot", model)
    (model / "chat_template.jinja").unlink(missing_ok=True)  # where transformers 5 saves it
    cfg = model / "tokenizer_config.json"
    cfg.write_text(cfg.read_text().replace('"chat_template"', '"unused_template"'))  # where older versions did
    assert not getattr(load_tokenizer(model), "chat_template", None)
    with pytest.raises(FusevalError, match="no chat template.*--chat-template"):
        TransformersBackend(model).start()
    tpl = tmp_path / "chat.jinja"
    tpl.write_text(load_tokenizer(world / "pivot").chat_template)
    with TransformersBackend(model, TransformersOptions(chat_template=tpl)) as b:
        assert b.chat(zoo_messages(1)[0], GenParams(max_new_tokens=6)).ok


def test_not_a_model_directory(tmp_path):
    with pytest.raises(FusevalError, match="not a model directory"):
        TransformersBackend(tmp_path / "missing").start()
