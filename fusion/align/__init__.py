"""Vocabulary mapping and token-sequence alignment for knowledge fusion (DESIGN.md section 2.3).

    vmap = map_vocab(source_tok, target_tok, cache_dir="runs/cache")    # source id -> target id
    path = dtw_align(source_tokens, target_tokens)                      # [(j, i), ...] monotone
    pairs = one_to_one_pairs(path, source_texts, target_texts)          # same text, 1:1 only
    ids, logprobs, ok = transfer_topk(src_ids, src_logprobs, vmap, pairs, target_gold)

Token text. Tokens from different families are compared by the bytes they stand for, held as a
str with one character per byte (bytes decoded as latin-1): byte-level (GPT-2 family) tokens map
back through the GPT-2 bytes-to-unicode table (`Ġ` a space, `Ċ` a newline), SentencePiece
tokens turn `▁` into a space and `<0xNN>` byte-fallback pieces into that byte. Where two target
tokens stand for one text (Llama's `A` and `<0x41>`), the ordinary piece is the one mapped to: the
tokenizer emits a byte piece only for bytes no ordinary piece covers. Special and other added tokens
(`<s>`, `<|end|>`) stand for no text: they never match ordinary tokens, and map only to the target's
token with the same content or, failing that, the same role (bos/eos/pad/unk).

Shift convention. Row t of a distribution array ([T, K] ids and log-probabilities) is a model's
distribution FOR token t, i.e. predicting token t from tokens < t; a causal LM's logits at
position t - 1 give row t. So a source token j paired one-to-one with target token i, both
standing for the same text, hands its row j to target row i. Rows without such a pair get the
one-hot of the target's gold token i (the token that row predicts, not the token before it).

What -1 means. In a vocabulary map, -1 is a source id with no target counterpart (a special
token with neither content nor role in the target, or a token that stands for no bytes); its
probability mass is dropped. In a transferred [T, K] id array, -1 is padding with log-prob -inf.

DTW runs in NumPy until a process has spent what starting numba costs (~0.5 s), then in numba's
compiled kernel (130-200x a plain-Python DP): a short process never starts numba. `warm_up()` starts it
now, e.g. before a long fusion run.

The modules: `tokens` (token text and kinds), `vocab` (the vocabulary map and its cache) and
`sequence` (DTW alignment, one-to-one pairs, moving top-K rows onto target positions).
"""

from fusion.align.sequence import dtw_align, dtw_path, one_to_one_pairs, token_cost, transfer_topk, warm_up
from fusion.align.tokens import KINDS, normalize_token, special_tokens, token_kind
from fusion.align.vocab import map_vocab

__all__ = [
    "KINDS",
    "dtw_align",
    "dtw_path",
    "map_vocab",
    "normalize_token",
    "one_to_one_pairs",
    "special_tokens",
    "token_cost",
    "token_kind",
    "transfer_topk",
    "warm_up",
]
