"""Synthetic two-turn chat domains with checkable answers: the tasks of the tiny world.

Each domain is a generator of conversations: a user question, the assistant's answer, a second
user turn that builds on the first answer, and the second answer. Every answer has a short exact
core (a number, a word, a phrase) that `check` compares; the rest of the answer is fixed phrasing.

    convs = generate("arithmetic", n=200, seed=0, split="train")
    convs[0].messages  -> [{"role": "user", ...}, {"role": "assistant", ...}, ...]
    convs[0].answers   -> ["12", "24"]         (the exact cores of the two answers)

Train and test never overlap: a conversation's split is decided by a hash of its question text,
so the same question can never be drawn for both splits, whatever the seeds.

Noisy answers (`noise=p`): with probability p an example's answers are replaced by a plausible
wrong answer of the domain (an off-by-one sum, the other number, another field, another variable):
the "sloppy annotator" of fusion data, whose labels the teachers can correct.

Shuffled answers (`shuffle_answers`): each conversation keeps its questions but takes its answers
from another conversation of its domain: the phrasing is right, the content says nothing about the
question. Training on such labels alone cannot learn the skill; a teacher that has it can teach it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from fusion.common.errors import FusevalError
from fusion.conversations import Conversation

_NAMES = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ida", "Jo", "Kim", "Lu", "Max", "Ned", "Ola", "Pip"]
_CITIES = ["Lima", "Oslo", "Rome", "Kyiv", "Nice", "Bern", "Doha", "Riga", "Baku", "Hue", "Cork", "Pune"]
_PETS = ["cat", "dog", "owl", "fox", "eel", "yak", "bat", "hen", "ant", "cod"]
_WORDS = ["red", "blue", "green", "cold", "warm", "fast", "slow", "tall", "small", "dark", "light", "soft",
          "loud", "calm", "sun", "moon", "star", "tree", "rock", "wind", "rain", "snow", "bird", "fish"]
_VARS = ["a", "b", "c", "n", "x", "y", "z", "k"]


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    # draw(rng) -> (turn1, answer1_text, core1, turn2, answer2_text, core2, wrong_core1, wrong_core2, phrase)
    draw: Callable[[random.Random], tuple]
    phrase: Callable[[str, int], str]  # the answer text around a core, for turn 1 or 2


def _arith(rng: random.Random):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    s = a + b
    ask = rng.choice(["What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}."]).format(a=a, b=b)
    return ask, str(s), "Double it.", str(2 * s), str(s + 1), str(2 * (s + 1))


def _compare(rng: random.Random):
    a, b = rng.sample(range(10, 100), 2)
    ask = rng.choice(["Which is larger: {a} or {b}?", "Pick the bigger number: {a}, {b}."]).format(a=a, b=b)
    hi, lo = max(a, b), min(a, b)
    return ask, str(hi), "And the smaller one?", str(lo), str(lo), str(hi)


def _extract(rng: random.Random):
    name, city, pet = rng.choice(_NAMES), rng.choice(_CITIES), rng.choice(_PETS)
    fields = [("name", name), ("city", city), ("pet", pet)]
    rng.shuffle(fields)
    record = "; ".join(f"{k}={v}" for k, v in fields)
    k1, k2 = rng.sample(["name", "city", "pet"], 2)
    other = {"name": name, "city": city, "pet": pet}
    k3 = ({"name", "city", "pet"} - {k1, k2}).pop()
    return (f"Record: {record}. What is the {k1}?", other[k1], f"And the {k2}?", other[k2], other[k3], other[k1])


def _code(rng: random.Random):
    v1, v2 = rng.sample(_VARS, 2)
    x1, x2 = rng.sample(range(1, 20), 2)
    code = f"{v1} = {x1}; {v2} = {x2}; print({v2})"
    return (f"Code: {code} What does it print?", str(x2), f"And print({v1})?", str(x1), str(x1), str(x2))


def _format(rng: random.Random):
    w = rng.sample(_WORDS, rng.randint(2, 3))
    up = " ".join(x.upper() for x in w)
    rev = " ".join(x.upper() for x in reversed(w))
    ask = f"Write in capitals: {' '.join(w)}"
    wrong1 = " ".join(w)
    return ask, up, "Now reverse the word order.", rev, wrong1, " ".join(reversed(w))


DOMAINS: dict[str, Domain] = {
    "arithmetic": Domain("arithmetic", "sums of two digits, then doubled", _arith,
                         lambda c, t: f"The sum is {c}." if t == 0 else f"Doubled, it is {c}."),
    "comparison": Domain("comparison", "the larger of two numbers, then the smaller", _compare,
                         lambda c, t: f"{c} is larger." if t == 0 else f"{c} is smaller."),
    "extraction": Domain("extraction", "a field of a record, then another", _extract,
                         lambda c, t: f"The answer is {c}."),
    "code": Domain("code", "what a two-line program prints", _code, lambda c, t: f"It prints {c}."),
    "formatting": Domain("formatting", "words in capitals, then reversed", _format, lambda c, t: c),
}


def split_of(text: str, test_fraction: float = 0.2) -> str:
    """'test' or 'train' for a question text: a stable hash, so the splits never overlap."""
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return "test" if h % 10_000 < test_fraction * 10_000 else "train"


def generate(domain: str, n: int, seed: int, split: str, noise: float = 0.0, test_fraction: float = 0.2,
             unique: bool = False) -> list[Conversation]:
    """n conversations of a domain from the given split (`train` or `test`).

    unique=True returns distinct questions only (fewer than n if the split has fewer).
    noise: the probability that an example carries the domain's plausible wrong answers.
    """
    if domain not in DOMAINS:
        raise FusevalError(f"unknown domain {domain!r}; choose from {sorted(DOMAINS)}")
    if split not in ("train", "test"):
        raise FusevalError(f"split must be 'train' or 'test', not {split!r}")
    d = DOMAINS[domain]
    rng = random.Random(f"{domain}/{seed}/{split}")
    out: list[Conversation] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < 50 * n + 1000:
        tries += 1
        q1, c1, q2, c2, w1, w2 = d.draw(rng)
        if split_of(q1, test_fraction) != split or (unique and q1 in seen):
            continue
        seen.add(q1)
        noisy = bool(noise) and rng.random() < noise
        if noisy:
            c1, c2 = w1, w2
        messages = [{"role": "user", "content": q1}, {"role": "assistant", "content": d.phrase(c1, 0)},
                    {"role": "user", "content": q2}, {"role": "assistant", "content": d.phrase(c2, 1)}]
        qid = f"{domain}-{split}-{seed}-{len(out)}"
        out.append(Conversation(domain, qid, messages, [c1, c2], noisy))
    return out


def shuffle_answers(convs: list[Conversation], seed: int, domains: set[str] | None = None) -> list[Conversation]:
    """The conversations with their assistant turns (and answer cores) permuted among the same domain's
    (only those of `domains`, if given; the rest are returned as they are, in place).

    A conversation whose drawn answers happen to equal its own keeps `noisy=False`; every other is noisy.
    """
    rng = random.Random(f"shuffle/{seed}")
    by_domain: dict[str, list[int]] = {}
    for i, c in enumerate(convs):
        if domains is None or c.domain in domains:
            by_domain.setdefault(c.domain, []).append(i)
    out = list(convs)
    for idx in by_domain.values():
        donors = idx[:]
        rng.shuffle(donors)
        for i, j in zip(idx, donors):
            c, d = convs[i], convs[j]
            answers = iter(m["content"] for m in d.messages if m["role"] == "assistant")
            messages = [m if m["role"] == "user" else {"role": "assistant", "content": next(answers)}
                        for m in c.messages]
            out[i] = Conversation(c.domain, c.qid, messages, list(d.answers), list(d.answers) != list(c.answers))
    return out


def extract_core(domain: str, text: str, turn: int) -> str:
    """The exact core of an answer text (what `check` compares): the phrase around it removed."""
    d = DOMAINS[domain]
    before, _, after = d.phrase("\0", turn).partition("\0")
    t, after = text.strip().rstrip("."), after.rstrip(".")  # a missing final full stop is not an error
    if t.startswith(before) and t.endswith(after) and len(t) >= len(before) + len(after):
        return t[len(before):len(t) - len(after)].strip()
    return t


def check(conv: Conversation, answer_texts: list[str]) -> list[bool]:
    """Per turn: does the answer's core equal the reference core exactly?"""
    return [extract_core(conv.domain, a, t) == c for t, (a, c) in enumerate(zip(answer_texts, conv.answers))]


def corpus(domains: list[str], n_per_domain: int, seed: int = 0) -> list[str]:
    """Plain texts of train conversations (user and assistant turns), for training tokenizers."""
    texts = []
    for dname in domains:
        for conv in generate(dname, n_per_domain, seed, "train"):
            texts += [m["content"] for m in conv.messages]
    return texts
