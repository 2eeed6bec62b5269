"""fusion.align on real tokenizers: llama.cpp's vocabularies (llama-spm 32k SentencePiece with byte
fallback, qwen2's 152k byte-level BPE) and SmolLM2's 49k byte-level BPE, from `fusion.assets`.

    pytest tests/fusion/test_align_real.py        # ~40 s on 2 cores; skipped without the assets

Texts are checked against the tokenizers' own encodings and transformers' copy of the GPT-2 byte table,
maps against a brute-force search, DTW against the plain-Python recurrence of tests/fusion/test_align.py.
The maps of the other real pairs, and their timings, are in benchmarks/perf/align.py. ANSWERS (multi-turn
assistant answers of 100-420 tokens) are shared with that benchmark.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fusion import align
from fusion.align.tokens import is_byte_piece
from tests.fusion.test_align import as_bytes, dtw_tier, levenshtein, reference_dtw  # noqa: F401 (dtw_tier: a fixture)
from tests.fusion.test_assets import fetched_or_skip

# Multi-turn assistant answers: "<topic>_followup" is the second turn of the same conversation.
ANSWERS = {
    "prose": (
        "Great question! The sky looks blue because of a process called Rayleigh scattering. Sunlight seems "
        "white, but it is a mix of every visible colour, from red (wavelengths around 700 nm) to violet (around "
        "400 nm). When that light enters the atmosphere it meets nitrogen and oxygen molecules that are far "
        "smaller than its wavelength. Such tiny particles scatter short wavelengths much more strongly than long "
        "ones: the effect grows with the inverse fourth power of the wavelength, so blue light at 450 nm is "
        "scattered roughly 5.5 times more than red light at 700 nm.\n\n"
        "That scattered blue light reaches your eyes from every direction, which is why the whole dome of the "
        "sky glows blue rather than just the area around the Sun. You might ask why it isn't violet, since "
        "violet has an even shorter wavelength. There are three reasons:\n\n"
        "1. The Sun emits less violet than blue light.\n"
        "2. Some violet is absorbed high in the atmosphere by ozone.\n"
        "3. Our eyes are far less sensitive to violet; the cones that respond to short wavelengths are "
        "stimulated together with the \u201cgreen\u201d cones, and the brain reads the mix as sky blue.\n\n"
        "Sunsets work the same way, only in reverse. When the Sun is low, its light crosses up to 40 times more "
        "air before it reaches you. Most of the blue has been scattered out of the direct beam long before it "
        "arrives, so what is left is dominated by orange and red. Dust, smoke and sea salt add larger particles, "
        "which scatter all colours more evenly \u2014 that is why sunsets after a volcanic eruption or during "
        "wildfire season can be especially vivid."
    ),
    "prose_followup": (
        "Sure! Here it is in three sentences:\n\n"
        "Sunlight is made of all the colours mixed together, and when it bumps into the tiny bits of air above "
        "us, the blue part bounces around the most. Because blue light gets scattered all over the sky, it "
        "reaches our eyes from every direction, so the sky looks blue. At sunset the light has to travel through "
        "much more air, so most of the blue bounces away before it gets to us and we see the leftover reds and "
        "oranges."
    ),
    "code": (
        "Here is a small, dependency-free function that reads the CSV and returns the average score per "
        "student:\n\n"
        "```python\n"
        "import csv\n"
        "from collections import defaultdict\n"
        "from pathlib import Path\n\n\n"
        "def average_scores(path: str | Path) -> dict[str, float]:\n"
        "    \"\"\"Return {student: mean score} for a CSV with 'name' and 'score' columns.\"\"\"\n"
        "    totals: dict[str, float] = defaultdict(float)\n"
        "    counts: dict[str, int] = defaultdict(int)\n"
        "    with open(path, newline=\"\", encoding=\"utf-8\") as f:\n"
        "        for row in csv.DictReader(f):\n"
        "            name = row[\"name\"].strip()\n"
        "            totals[name] += float(row[\"score\"])\n"
        "            counts[name] += 1\n"
        "    return {name: totals[name] / counts[name] for name in sorted(totals)}\n\n\n"
        "if __name__ == \"__main__\":\n"
        "    for student, avg in average_scores(\"grades.csv\").items():\n"
        "        print(f\"{student:<12} {avg:6.2f}\")\n"
        "```\n\n"
        "How it works:\n\n"
        "- `csv.DictReader` maps each line to a dictionary keyed by the header row, so the column order does "
        "not matter.\n"
        "- Two `defaultdict`s keep a running total and a count per student; dividing them at the end gives the "
        "mean without storing every score.\n"
        "- `newline=\"\"` is what the `csv` module's documentation recommends, so quoted fields that contain "
        "line breaks are read correctly.\n\n"
        "For a file like\n\n"
        "```\nname,score\nAna,91\nBen,78.5\nAna,85\n```\n\n"
        "the script prints `Ana 88.00` and `Ben 78.50`."
    ),
    "code_followup": (
        "Good idea \u2014 right now a blank or non-numeric score raises `ValueError` and stops the whole run. "
        "Here is a version that skips bad rows and reports them instead:\n\n"
        "```python\n"
        "import logging\n\n"
        "log = logging.getLogger(__name__)\n\n\n"
        "def average_scores(path: str | Path) -> dict[str, float]:\n"
        "    totals: dict[str, float] = defaultdict(float)\n"
        "    counts: dict[str, int] = defaultdict(int)\n"
        "    with open(path, newline=\"\", encoding=\"utf-8\") as f:\n"
        "        for line_no, row in enumerate(csv.DictReader(f), start=2):\n"
        "            try:\n"
        "                score = float(row[\"score\"])\n"
        "            except (TypeError, ValueError):\n"
        "                log.warning(\"line %d: bad score %r, skipped\", line_no, row.get(\"score\"))\n"
        "                continue\n"
        "            name = row[\"name\"].strip()\n"
        "            totals[name] += score\n"
        "            counts[name] += 1\n"
        "    return {name: totals[name] / counts[name] for name in sorted(totals)}\n"
        "```\n\n"
        "`start=2` makes the line numbers match what you see in an editor, because line 1 is the header. "
        "If you would rather fail loudly, replace the `continue` with `raise`."
    ),
    "numbers": (
        "Here's a simple monthly budget for a take-home pay of \u20ac2,400, using the 50/30/20 rule as a "
        "starting point:\n\n"
        "| Category | Share | Amount |\n"
        "|---|---|---|\n"
        "| Needs (rent, groceries, transport, utilities) | 50% | \u20ac1,200 |\n"
        "| Wants (eating out, hobbies, subscriptions) | 30% | \u20ac720 |\n"
        "| Savings and debt repayment | 20% | \u20ac480 |\n\n"
        "A closer look at the needs:\n\n"
        "1. Rent: \u20ac850 (35.4% of income)\n"
        "2. Groceries: \u20ac220\n"
        "3. Public transport pass: \u20ac49\n"
        "4. Utilities and phone: \u20ac81\n\n"
        "Total: 850 + 220 + 49 + 81 = \u20ac1,200, exactly the 50% target. If you put the \u20ac480 of "
        "savings into an account paying 3% a year, after 12 months you would have about \u20ac5,832, and "
        "after 5 years roughly \u20ac31,000."
    ),
    "numbers_followup": (
        "If rent rises to \u20ac950, needs come to \u20ac1,300, or 54.2% of your income. To stay within "
        "\u20ac2,400 you could:\n\n"
        "- cut wants from \u20ac720 to \u20ac620 (25.8%), keeping savings at \u20ac480 (20%), or\n"
        "- keep wants at \u20ac720 and lower savings to \u20ac380 (15.8%).\n\n"
        "The first option is usually better: \u20ac100 a month less on wants still leaves \u20ac20 a day, "
        "while saving \u20ac1,200 less a year would delay an emergency fund of three months' expenses "
        "(about \u20ac6,000) by roughly a year."
    ),
}

BYTE_PIECE = r"<0x[0-9A-Fa-f]{2}>"


@pytest.fixture(scope="module")
def toks() -> dict:
    from fusion import assets
    from fusion.chat import load_tokenizer

    fetched_or_skip()
    return {"llama-spm": load_tokenizer(assets.tokenizer_dir("llama-spm")),
            "qwen2": load_tokenizer(assets.tokenizer_dir("qwen2")),
            "smollm2": load_tokenizer(assets.smollm2_dir())}


def vocab_texts(tok) -> list[str | None]:
    """The normalized text of every id; None for special tokens."""
    kind, specials = align.token_kind(tok), align.special_tokens(tok)
    return [align.normalize_token(t, kind, specials) for t in tok.convert_ids_to_tokens(list(range(len(tok))))]


def map_shares(vmap: np.ndarray, source_texts: list[str | None], target_texts: list[str | None]) -> dict[str, float]:
    """Share of source ids mapped to a target token of identical text, by edit distance, special to special
    (by content or role), and unmapped (-1)."""
    n = len(vmap)
    counts = {"identical": 0, "edit_distance": 0, "special": 0, "unmapped": int((vmap < 0).sum())}
    for text, t in zip(source_texts, vmap.tolist()):
        if t >= 0:
            counts["special" if text is None else "identical" if text == target_texts[t] else "edit_distance"] += 1
    return {k: v / n for k, v in counts.items()}


def check_against_brute_force(vmap, source_texts, target, target_texts, sample: int, seed: int = 0) -> None:
    """Exact matches all, and a sample of the rest against a search of every target text: the least edit
    distance, then the shortest text, then the lowest id, where a text's id is its ordinary piece's (lowest
    id) before a byte-fallback piece's."""
    tokens = target.convert_ids_to_tokens(list(range(len(target))))
    sentencepiece = align.token_kind(target) == "sentencepiece"
    stands_for: dict[str, int] = {}
    for _, i in sorted((sentencepiece and re.fullmatch(BYTE_PIECE, t) is not None, i) for i, t in enumerate(tokens)):
        if target_texts[i] is not None:
            stands_for.setdefault(target_texts[i], i)
    texts = list(stands_for)
    ids, lengths = np.array([stands_for[t] for t in texts]), np.array([len(t) for t in texts])
    misses = []
    for i, text in enumerate(source_texts):
        if text in stands_for:
            assert vmap[i] == stands_for[text], (i, text)
        elif text is not None:
            misses.append(i)
    for i in np.random.default_rng(seed).choice(misses, size=min(sample, len(misses)), replace=False):
        dist = process.cdist([source_texts[i]], texts, scorer=Levenshtein.distance)[0]
        assert vmap[i] == ids[np.lexsort((ids, lengths, dist))[0]], (i, source_texts[i])


def check_specials(source, target, vmap, source_texts, target_texts) -> None:
    """Ordinary tokens map to ordinary ones; specials to the target's special of the same content, else of
    the same role (eos, bos, pad, unk, in that order), else to nothing."""
    special_target = np.array([t is None for t in target_texts])
    ordinary = np.array([t is not None for t in source_texts])
    assert (vmap[ordinary] >= 0).all() and not special_target[vmap[ordinary]].any()
    by_content = {t: i for i, t in reversed(list(enumerate(target.convert_ids_to_tokens(list(range(len(target)))))))
                  if target_texts[i] is None}
    for i in np.flatnonzero(~ordinary):
        token = source.convert_ids_to_tokens(int(i))
        want = by_content.get(token, -1)
        for role in ("eos_token", "bos_token", "pad_token", "unk_token"):
            if want < 0 and getattr(source, role) == token and getattr(target, role) in by_content:
                want = by_content[getattr(target, role)]
        assert vmap[i] == want, token


def test_real_token_texts(toks):
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    sp, qwen, smol = toks["llama-spm"], toks["qwen2"], toks["smollm2"]
    assert [align.token_kind(t) for t in (sp, qwen, smol)] == ["sentencepiece", "byte_level", "byte_level"]

    kinds = {id(t): (align.token_kind(t), align.special_tokens(t)) for t in (sp, qwen, smol)}

    def text(tok, token):
        return align.normalize_token(token, *kinds[id(tok)])

    assert text(sp, "▁the") == text(qwen, "Ġthe") == text(smol, "Ġthe") == " the"
    assert text(sp, "<0x0A>") == text(qwen, "Ċ") == text(smol, "Ċ") == "\n"
    assert text(sp, "<0xE4>") == text(qwen, "ä") == "\xe4"  # one byte of a multi-byte character
    assert text(sp, "▁€") == text(qwen, "ĠâĤ¬") == as_bytes(" €")
    assert text(sp, "</s>") is None and text(qwen, "<|im_end|>") is None and text(smol, "<|im_start|>") is None
    # Every byte-level token, by transformers' own copy of the GPT-2 byte table.
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    for tok in (qwen, smol):
        specials = align.special_tokens(tok)
        for token in tok.get_vocab():
            if token not in specials:
                assert text(tok, token) == bytes(byte_of[c] for c in token).decode("latin-1"), token
    # The tokens of each answer spell its UTF-8 bytes (SentencePiece marks the first word with a space).
    for answer in ANSWERS.values():
        for tok in (sp, qwen, smol):
            spelled = "".join(text(tok, t) for t in tok.tokenize(answer))
            assert (spelled.removeprefix(" ") if tok is sp else spelled) == as_bytes(answer)


def test_map_llama_spm_to_qwen2(toks):
    sp, qwen = toks["llama-spm"], toks["qwen2"]
    vmap = align.map_vocab(sp, qwen)
    s_texts, t_texts = vocab_texts(sp), vocab_texts(qwen)
    shares = map_shares(vmap, s_texts, t_texts)
    assert shares["identical"] > 0.8 and shares["edit_distance"] < 0.2, shares
    assert [sp.convert_ids_to_tokens(int(i)) for i in np.flatnonzero(vmap < 0)] == ["<unk>"]  # qwen2 has no unk
    for i, token in enumerate(sp.convert_ids_to_tokens(list(range(len(sp))))):
        if is_byte_piece(token):  # all 256 byte-fallback pieces land on qwen2's one-byte tokens
            assert t_texts[vmap[i]] == chr(int(token[3:5], 16)), token
    check_specials(sp, qwen, vmap, s_texts, t_texts)
    check_against_brute_force(vmap, s_texts, qwen, t_texts, sample=40)


@pytest.mark.slow
def test_map_qwen2_to_llama_spm_prefers_ordinary_pieces(toks):
    sp, qwen = toks["llama-spm"], toks["qwen2"]
    vmap = align.map_vocab(qwen, sp)
    s_texts, t_texts = vocab_texts(qwen), vocab_texts(sp)
    shares = map_shares(vmap, s_texts, t_texts)
    assert 0.15 < shares["identical"] < 0.2 and shares["edit_distance"] > 0.8, shares
    # Llama's byte pieces are emitted only for bytes no ordinary piece covers: "A" is "A", not <0x41>;
    # a newline has only its byte piece.
    for token, want in (("A", "A"), ("Ġ", "▁"), (".", "."), ("Ċ", "<0x0A>"), ("ĠThe", "▁The")):
        assert sp.convert_ids_to_tokens(int(vmap[qwen.convert_tokens_to_ids(token)])) == want
    check_specials(qwen, sp, vmap, s_texts, t_texts)
    check_against_brute_force(vmap, s_texts, sp, t_texts, sample=20)


@pytest.mark.parametrize("source,target", [("smollm2", "llama-spm"), ("llama-spm", "smollm2")])
def test_map_smollm2_and_llama_spm(toks, source, target):
    src, tgt = toks[source], toks[target]
    vmap = align.map_vocab(src, tgt)
    s_texts, t_texts = vocab_texts(src), vocab_texts(tgt)
    shares = map_shares(vmap, s_texts, t_texts)
    assert shares["identical"] > (0.35 if source == "smollm2" else 0.55), shares
    check_specials(src, tgt, vmap, s_texts, t_texts)
    check_against_brute_force(vmap, s_texts, tgt, t_texts, sample=20)


@pytest.mark.usefixtures("dtw_tier")
@pytest.mark.parametrize("source,target", [("llama-spm", "qwen2"), ("smollm2", "llama-spm")])
def test_dtw_on_real_answers(toks, source, target):
    src_tok, tgt_tok = toks[source], toks[target]
    kinds = (align.token_kind(src_tok), align.token_kind(tgt_tok))
    for name in ("numbers_followup", "prose"):  # ~160 and ~350 tokens
        src, tgt = src_tok.tokenize(ANSWERS[name]), tgt_tok.tokenize(ANSWERS[name])
        s_txt = [align.normalize_token(t, kinds[0]) or "" for t in src]
        t_txt = [align.normalize_token(t, kinds[1]) or "" for t in tgt]
        path = align.dtw_align(src, tgt, kinds=kinds)
        assert path == reference_dtw([[levenshtein(a, b) for b in t_txt] for a in s_txt]), name
        pairs = align.one_to_one_pairs(path, s_txt, t_txt)
        assert all(s_txt[j] == t_txt[i] for j, i in pairs)
        assert len(pairs) > 0.6 * len(tgt), (name, len(pairs), len(tgt))
