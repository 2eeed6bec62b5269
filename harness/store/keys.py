"""Content keys of the store's rows: equal content, equal key, so repeated work is found and not redone.

A key changes only when what it names changes; the formats here are part of the store's format
(every existing store holds them), so never change one without a schema version bump.
"""

from __future__ import annotations

from fusion.common.hashing import digest


def question_key(category: str, turns: list[str]) -> str:
    return digest("q", category, list(turns))


def answer_key(model_hash: str, qkey: str, sample: int, gen_key: str) -> str:
    return digest("a", model_hash, qkey, sample, gen_key)


def judgment_key(judge: str, akey: str, akey_b: str | None, turn: int, repeat: int, ref_version: str | None) -> str:
    return digest("j", judge, akey, akey_b, turn, repeat, ref_version)
