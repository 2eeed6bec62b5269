"""Chat encoding and greedy answering (fusion/chat.py) and the synthetic chat domains (fusion/zoo/domains.py)."""

from __future__ import annotations

import copy
import itertools
import re

import numpy as np
import pytest
import torch

from fusion import chat, zoo
from fusion.chat import answer_two_turns, encode_chat, end_token_ids, greedy_answers, load_tokenizer
from fusion.common.errors import FusevalError
from fusion.conversations import Conversation
from fusion.zoo import domains as D

CONVS = [c for d in sorted(D.DOMAINS) for c in D.generate(d, 3, 11, "train")]


@pytest.fixture(scope="module")
def texts():
    return D.corpus(sorted(D.DOMAINS), 50)


@pytest.fixture(scope="module")
def toks(texts):
    """{(family, template name): tokenizer} for both tokenizer families and both zoo templates."""
    out = {}
    for fam, fn in (("bpe", zoo.train_bpe_tokenizer), ("sp", zoo.train_sp_tokenizer)):
        for name, tpl in (("world", zoo.WORLD_TEMPLATE), ("newline", zoo.CHAT_TEMPLATE)):
            out[fam, name] = fn(texts, 400, chat_template=tpl)
    return out


# --- encode_chat --------------------------------------------------------------------------------

@pytest.mark.parametrize("fam", ["bpe", "sp"])
@pytest.mark.parametrize("template", ["world", "newline"])
def test_encode_chat_response_tokens_are_the_assistant_turns(toks, fam, template):
    tok = toks[fam, template]
    end = tok.convert_tokens_to_ids("<|end|>")
    for c in CONVS:
        ids, resp, per_turn = encode_chat(tok, c.messages)
        assistant = [m["content"] for m in c.messages if m["role"] == "assistant"]
        assert len(per_turn) == 2
        np.testing.assert_array_equal(resp, np.concatenate(per_turn))
        # The ids are the tokenization of the rendered chat.
        rendered = tok.apply_chat_template(c.messages, tokenize=False)
        assert ids.tolist() == tok(rendered, add_special_tokens=False)["input_ids"]
        for content, turn in zip(assistant, per_turn):
            assert tok.decode(ids[turn].tolist()) == content + "<|end|>"
            np.testing.assert_array_equal(turn, np.arange(turn[0], turn[-1] + 1))  # contiguous
            assert ids[turn[-1]] == end  # the model learns to stop
            assert tok.convert_ids_to_tokens(int(ids[turn[0] - 1])) in ("<|assistant|>", "Ċ", "<0x0A>")
        # Everything else (user turns, role markers) is not a response token.
        others = np.setdiff1d(np.arange(len(ids)), resp)
        assert "".join(tok.decode([int(i)]) for i in ids[others]).count("<|assistant|>") == 2


def test_encode_chat_without_template_is_a_clear_error(texts):
    tok = zoo.train_bpe_tokenizer(texts[:200], 300, chat_template=None)
    with pytest.raises(FusevalError, match="no chat template"):
        encode_chat(tok, CONVS[0].messages)
    with pytest.raises(FusevalError, match="no chat template"):
        greedy_answers(None, tok, [CONVS[0].messages[:1]])


def test_encode_chat_rejects_templates_that_are_not_prefix_stable(toks):
    tok = copy.deepcopy(toks["bpe", "world"])  # keep the shared fixture intact
    tok.chat_template = zoo.WORLD_TEMPLATE + "{{ messages | length }}"  # a footer that changes with every turn
    with pytest.raises(FusevalError, match="prefix"):
        encode_chat(tok, CONVS[0].messages)


def test_end_token_ids(toks):
    tok = toks["sp", "world"]
    assert end_token_ids(tok) == sorted({tok.convert_tokens_to_ids("</s>"), tok.convert_tokens_to_ids("<|end|>")})


# --- load_tokenizer -----------------------------------------------------------------------------

def probe_texts(texts) -> list[str]:
    return texts[:40] + ["Hello world, 12 + 30 = 42.\nNaïve café", "  two  spaces\tand tab"]


def test_load_tokenizer_keeps_sp_tokenizer_next_to_qwen2_config(toks, texts, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, Qwen2Config

    toks["sp", "world"].save_pretrained(tmp_path)
    Qwen2Config(vocab_size=len(toks["sp", "world"])).save_pretrained(tmp_path)
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    probes = probe_texts(texts)
    want = [raw.encode(t, add_special_tokens=False).ids for t in probes]
    # Without the fallback transformers swaps in its own Qwen2 pipeline (this is what load_tokenizer guards against).
    auto = AutoTokenizer.from_pretrained(tmp_path)
    assert [auto(t, add_special_tokens=False)["input_ids"] for t in probes] != want
    tok = load_tokenizer(tmp_path)
    assert [tok(t, add_special_tokens=False)["input_ids"] for t in probes] == want
    assert [tok.decode(w) for w in want[:5]] == [raw.decode(w) for w in want[:5]]
    # The chat template and special tokens survive: encoding a chat works as with the original tokenizer.
    assert (tok.pad_token, tok.eos_token) == ("<pad>", "</s>")
    for c in CONVS[:3]:
        a, ra, _ = encode_chat(tok, c.messages)
        b, rb, _ = encode_chat(toks["sp", "world"], c.messages)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ra, rb)


def test_load_tokenizer_llama_bpe_dir(toks, texts, tmp_path):
    from tokenizers import Tokenizer
    from transformers import LlamaConfig

    toks["bpe", "world"].save_pretrained(tmp_path)
    LlamaConfig(vocab_size=len(toks["bpe", "world"])).save_pretrained(tmp_path)
    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)
    assert [tok(t, add_special_tokens=False)["input_ids"] for t in probe_texts(texts)] == \
        [raw.encode(t, add_special_tokens=False).ids for t in probe_texts(texts)]
    assert tok.chat_template == zoo.WORLD_TEMPLATE


def test_load_tokenizer_missing_dir(tmp_path):
    with pytest.raises(FusevalError, match="cannot load tokenizer"):
        load_tokenizer(tmp_path / "nothing-here")


# --- greedy answers -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(toks):
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = toks["bpe", "world"]
    spec = zoo.ModelSpec(name="t", arch="llama", tokenizer="bpe", vocab_size=400, hidden=32, layers=1, heads=2,
                         intermediate=64, domains=["arithmetic"])
    cfg = AutoConfig.for_model(**{k: v for k, v in zoo.model_config(spec, tok).items() if k != "architectures"})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # peaked distributions, so greedy choices are far from ties
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return model, tok


def reference_greedy(model, tok, messages, max_new: int) -> str:
    """Unbatched, unpadded argmax decoding with a full forward pass per token."""
    ids = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False)["input_ids"]
    stops = {tok.convert_tokens_to_ids("<|end|>"), tok.eos_token_id}
    out = []
    with torch.no_grad():
        for _ in range(max_new):
            nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt in stops:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True).strip()


def test_greedy_answers_match_unbatched_reference(tiny_model):
    model, tok = tiny_model
    prompts = [c.messages[:1] for c in CONVS[::3]]  # different lengths: left padding in a batch
    assert len({len(tok.apply_chat_template(p, tokenize=False)) for p in prompts}) > 1
    got = greedy_answers(model, tok, prompts, max_new_tokens=8, batch_size=3)
    assert len(got) == len(prompts) and all(isinstance(a, str) for a in got)
    assert got == [reference_greedy(model, tok, p, 8) for p in prompts]
    assert any(got)


def test_answer_two_turns_feeds_back_own_answers(tiny_model, monkeypatch):
    model, tok = tiny_model
    seen: list[list[list[dict]]] = []

    def fake(model_, tok_, conversations, **kw):
        seen.append([list(c) for c in conversations])
        return [f"A{len(seen)}-{i}" for i in range(len(conversations))]

    monkeypatch.setattr(chat, "greedy_answers", fake)
    turns = [["q1", "q1b"], ["q2"], ["q3", "q3b"]]
    answers = answer_two_turns(model, tok, turns)
    assert answers == [["A1-0", "A2-0"], ["A1-1"], ["A1-2", "A2-1"]]
    assert seen[0] == [[{"role": "user", "content": q}] for q in ("q1", "q2", "q3")]
    u = lambda text: {"role": "user", "content": text}  # noqa: E731
    a = lambda text: {"role": "assistant", "content": text}  # noqa: E731
    assert seen[1] == [[u("q1"), a("A1-0"), u("q1b")], [u("q3"), a("A1-2"), u("q3b")]]


def test_answer_two_turns_with_real_model(tiny_model):
    model, tok = tiny_model
    convs = CONVS[:4]
    answers = answer_two_turns(model, tok, [c.prompt_turns() for c in convs], max_new_tokens=6)
    assert [len(a) for a in answers] == [2] * 4 and all(isinstance(x, str) for a in answers for x in a)
    # Turn 2 equals greedy decoding of the conversation with the model's own first answer in it.
    c = convs[1]
    history = [{"role": "user", "content": c.prompt_turns()[0]}, {"role": "assistant", "content": answers[1][0]},
               {"role": "user", "content": c.prompt_turns()[1]}]
    assert answers[1][1] == reference_greedy(model, tok, history, 6)


# --- domains ------------------------------------------------------------------------------------

def solve(domain: str, q1: str, q2: str) -> tuple[str, str, str, str]:
    """Correct (core1, core2) and the answer texts, worked out from the question texts alone."""
    nums = [int(x) for x in re.findall(r"\d+", q1)]
    if domain == "arithmetic":
        s = nums[0] + nums[1]
        return str(s), str(2 * s), f"The sum is {s}.", f"Doubled, it is {2 * s}."
    if domain == "comparison":
        hi, lo = max(nums), min(nums)
        return str(hi), str(lo), f"{hi} is larger.", f"{lo} is smaller."
    if domain == "extraction":
        record = dict(kv.split("=") for kv in re.search(r"Record: (.*)\. What", q1).group(1).split("; "))
        k1 = re.search(r"What is the (\w+)\?", q1).group(1)
        k2 = re.search(r"And the (\w+)\?", q2).group(1)
        return record[k1], record[k2], f"The answer is {record[k1]}.", f"The answer is {record[k2]}."
    if domain == "code":
        values = dict(re.findall(r"(\w) = (\d+);", q1))
        v1 = values[re.search(r"print\((\w)\) What", q1).group(1)]
        v2 = values[re.search(r"print\((\w)\)\?", q2).group(1)]
        return v1, v2, f"It prints {v1}.", f"It prints {v2}."
    if domain == "formatting":
        words = q1.split(": ", 1)[1].split()
        up = " ".join(w.upper() for w in words)
        rev = " ".join(w.upper() for w in reversed(words))
        return up, rev, up, rev
    raise AssertionError(domain)


@pytest.mark.parametrize("domain", sorted(D.DOMAINS))
def test_train_and_test_questions_never_overlap(domain):
    train = {c.messages[0]["content"] for s in range(3) for c in D.generate(domain, 300, s, "train")}
    test = {c.messages[0]["content"] for s in range(3) for c in D.generate(domain, 150, s, "test")}
    assert len(train) > 50 and len(test) > 20
    assert not train & test
    assert all(D.split_of(q) == "train" for q in train) and all(D.split_of(q) == "test" for q in test)


def test_split_of_respects_test_fraction():
    qs = [f"question {i}" for i in range(4000)]
    share = np.mean([D.split_of(q) == "test" for q in qs])
    assert 0.17 < share < 0.23
    assert all(D.split_of(q, 0.0) == "train" for q in qs[:200])
    assert all(D.split_of(q, 1.0) == "test" for q in qs[:200])


@pytest.mark.parametrize("domain", sorted(D.DOMAINS))
def test_generate_is_deterministic_and_correct(domain):
    a = D.generate(domain, 40, 7, "train")
    b = D.generate(domain, 40, 7, "train")
    assert [(c.qid, c.messages, c.answers) for c in a] == [(c.qid, c.messages, c.answers) for c in b]
    assert [c.messages for c in D.generate(domain, 40, 8, "train")] != [c.messages for c in a]
    assert len({c.qid for c in a}) == 40
    for c in a + D.generate(domain, 20, 7, "test"):
        assert [m["role"] for m in c.messages] == ["user", "assistant", "user", "assistant"]
        q1, q2 = c.prompt_turns()
        core1, core2, text1, text2 = solve(domain, q1, q2)
        assert c.answers == [core1, core2]
        assert [c.messages[1]["content"], c.messages[3]["content"]] == [text1, text2]
        assert D.check(c, [text1, text2]) == [True, True]


@pytest.mark.parametrize("domain", sorted(D.DOMAINS))
def test_noise_replaces_answers_with_wrong_ones(domain):
    noisy = D.generate(domain, 60, 3, "train", noise=1.0)
    assert len(noisy) == 60
    for c in noisy:
        q1, q2 = c.prompt_turns()
        core1, core2, text1, text2 = solve(domain, q1, q2)
        assert c.answers[0] != core1 and c.answers[1] != core2
        assert D.check(c, [text1, text2]) == [False, False]  # the correct answers are now marked wrong
        # the conversation's own (wrong) answer texts are consistent with its cores
        assert D.check(c, [c.messages[1]["content"], c.messages[3]["content"]]) == [True, True]
    half = D.generate(domain, 400, 3, "train", noise=0.5)
    wrong = np.mean([c.answers[0] != solve(domain, *c.prompt_turns())[0] for c in half])
    assert 0.4 < wrong < 0.6


def test_unique_returns_every_distinct_question_once():
    # Arithmetic has 9 · 9 · 3 possible first questions; count those in the test split independently.
    templates = ["What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}."]
    all_q = {t.format(a=a, b=b) for t, a, b in itertools.product(templates, range(1, 10), range(1, 10))}
    test_q = {q for q in all_q if D.split_of(q) == "test"}
    got = D.generate("arithmetic", 10_000, 0, "test", unique=True)
    assert len(got) == len(test_q) < 10_000
    assert {c.messages[0]["content"] for c in got} == test_q


@pytest.mark.parametrize("domain,turn,core,good,bad", [
    # A missing final full stop is accepted ("The sum is 12" counts as 12).
    ("arithmetic", 0, "12", "The sum is 12.", ["The sum is 13.", "the sum is 12.",
                                               "The sum is 12. Really."]),
    ("arithmetic", 1, "24", "Doubled, it is 24.", ["The sum is 24.", "Doubled, it is 240."]),
    ("comparison", 0, "71", "71 is larger.", ["17 is larger.", "71 is smaller.", "71 is larger!"]),
    ("extraction", 1, "Oslo", "The answer is Oslo.", ["The answer is oslo.", "The answer: Oslo."]),
    ("code", 0, "5", "It prints 5.", ["It prints 15.", "It prints 5!"]),
    ("formatting", 0, "RED BLUE", "RED BLUE", ["red blue", "BLUE RED", "RED  BLUE!"]),
])
def test_extract_core_and_check(domain, turn, core, good, bad):
    assert D.extract_core(domain, good, turn) == core
    assert D.extract_core(domain, f"  {good}\n", turn) == core  # surrounding whitespace is ignored
    assert D.extract_core(domain, core, turn) == core  # a bare core (no phrasing) counts as that core
    for b in bad:
        assert D.extract_core(domain, b, turn) != core
    conv = Conversation(domain, "q", [], [core, core] if turn == 1 else [core])
    texts = [good, good] if turn == 1 else [good]
    assert D.check(conv, texts)[turn] is True
    for b in bad:
        assert D.check(conv, [b, b] if turn == 1 else [b])[turn] is False


def test_domain_errors():
    with pytest.raises(FusevalError, match="unknown domain 'poetry'"):
        D.generate("poetry", 1, 0, "train")
    with pytest.raises(FusevalError, match="split must be"):
        D.generate("arithmetic", 1, 0, "validation")


def test_corpus_is_train_text_of_the_domains():
    texts = D.corpus(["code", "formatting"], 5, seed=1)
    assert len(texts) == 2 * 5 * 4
    convs = D.generate("code", 5, 1, "train") + D.generate("formatting", 5, 1, "train")
    assert texts == [m["content"] for c in convs for m in c.messages]


def test_shuffled_answers_keep_questions_and_phrasing_but_carry_no_skill():
    convs = D.generate("arithmetic", 300, 0, "train") + D.generate("formatting", 20, 0, "train")
    out = D.shuffle_answers(convs, seed=1, domains={"arithmetic"})
    assert [c.qid for c in out] == [c.qid for c in convs]
    assert out[300:] == convs[300:]  # other domains untouched, in place
    for c, s in zip(convs, out):
        assert [m["content"] for m in c.messages if m["role"] == "user"] == s.prompt_turns()
        assert D.check(s, [m["content"] for m in s.messages if m["role"] == "assistant"]) == [True, True]
    # the answers are a permutation of the domain's answers, and almost none is its own question's
    assert sorted(tuple(c.answers) for c in out[:300]) == sorted(tuple(c.answers) for c in convs[:300])
    own = np.mean([D.check(c, [m["content"] for m in s.messages if m["role"] == "assistant"])[0]
                   for c, s in zip(convs[:300], out[:300])])
    assert own < 0.2, own  # sums collide by chance (2-18), never by design
    assert all(s.noisy == (s.answers != c.answers) for c, s in zip(convs, out))
    assert D.shuffle_answers(convs, seed=1, domains={"arithmetic"}) == out  # seeded
