"""Small tokenizers trained locally, for the zoo and the world: byte-level BPE and SentencePiece-style Unigram.

    tok = train_bpe_tokenizer(texts, 512, out_dir)     # Ġ-style, every byte a base symbol
    tok = train_sp_tokenizer(texts, 512, out_dir)      # ▁-style, byte fallback
    build_tokenizer(out_dir)                           # BPE on the built-in corpus, with CHAT_TEMPLATE

The two families split text the way GPT-2/Qwen and Llama-1/T5 tokenizers do (`Ġ` vs `▁`, byte
fallback); the world's models use both, so fusion has to align tokens across them (fusion/align/).
"""

from __future__ import annotations

import json
from pathlib import Path

# A small built-in corpus for the tokenizer: enough byte pairs for a few hundred merges.
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Merge the models, then measure whether the merged model got better.",
    "What is 12 plus 30? The answer is 42.",
    "Extract the name from the record: name=Ada; city=Paris; age=36.",
    "Rewrite the sentence in upper case and keep the punctuation.",
    "def add(a, b):\n    return a + b\nprint(add(2, 3))",
    "Which is larger, 17 or 71? 71 is larger than 17.",
    "User: hello there! Assistant: Hello, how can I help you today?",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]


def _save_fast(tok, out_dir: Path | None, chat_template: str | None, unk: str | None = None):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token=unk)
    fast.chat_template = chat_template
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def train_bpe_tokenizer(texts, vocab_size: int, out_dir: Path | None = None, chat_template: str | None = CHAT_TEMPLATE):
    """A byte-level BPE tokenizer (GPT-2 family: `Ġ` for a space, every byte a base symbol) trained
    on `texts`; saved with a chat template when `out_dir` is given. Returns the fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # Digits one by one (as Llama and Qwen tokenizers do), so numbers align across tokenizers.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return _save_fast(tok, out_dir, chat_template)


def _canonical_penalties(pieces: list[list], specials: list[str]) -> list[list]:
    """The characters the trainer adds at the end (required, but not learnt) take the scores min - k * 1e-4 in
    hash-set order, which changes from process to process: give those scores to the characters in sorted order."""
    singles = sorted((score, p) for p, score in pieces if len(p) == 1 and p not in specials)
    run = singles[:1]
    for score, p in singles[1:]:
        if abs(score - run[-1][0] - 1e-4) > 2e-6:
            break
        run.append((score, p))
    if len(run) < 2:
        return pieces
    assign = dict(zip(sorted(p for _, p in run), sorted((score for score, _ in run), reverse=True)))
    return [[p, assign.get(p, score)] for p, score in pieces]


def train_sp_tokenizer(texts, vocab_size: int, out_dir: Path | None = None, chat_template: str | None = CHAT_TEMPLATE):
    """A SentencePiece-style Unigram tokenizer (Llama-1/T5 family: `▁` marks a word start, bytes
    outside the vocabulary fall back to `<0x..>` tokens) trained on `texts`. Returns the fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<unk>"] + SPECIAL_TOKENS
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")])
    n_bytes = 256
    trainer = trainers.UnigramTrainer(vocab_size=max(vocab_size - n_bytes, len(specials) + 1), special_tokens=specials,
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    # The trainer sums floats in a hash-map order that changes from process to process: scores differ in their last
    # bits and near-ties swap places, which renumbers tokens. Scores rounded to 1e-6 in a fixed order (specials first,
    # then by score, then by piece) make the tokenizer a function of its texts.
    pieces = [[p, round(score, 6)] for p, score in json.loads(tok.to_str())["model"]["vocab"]]
    pieces = _canonical_penalties(pieces, specials)
    pieces = [p for p in pieces if p[0] in specials] + sorted(
        (p for p in pieces if p[0] not in specials), key=lambda ps: (-ps[1], ps[0]))
    # Rebuild with the 256 byte-fallback pieces appended (the trainer does not add them itself).
    have = {p for p, _ in pieces}
    floor = min(score for _, score in pieces) - 1.0
    pieces += [[f"<0x{b:02X}>", floor] for b in range(n_bytes) if f"<0x{b:02X}>" not in have]
    out = Tokenizer(models.Unigram([tuple(p) for p in pieces], unk_id=0, byte_fallback=True))
    out.pre_tokenizer = tok.pre_tokenizer
    out.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    out.add_special_tokens(specials)
    return _save_fast(out, out_dir, chat_template, unk="<unk>")


def build_tokenizer(out_dir: Path, vocab_size: int = 512) -> None:
    """Train a byte-level BPE tokenizer (Ġ-style) on the built-in corpus and save it with a chat template."""
    train_bpe_tokenizer(_CORPUS * 4, vocab_size, out_dir)

