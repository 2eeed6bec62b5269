"""The tiny zoo's domains as a question set with programmatic checks (benchmarks/zoo/question.jsonl).

    python -m harness.formats.zoo          # rewrite benchmarks/zoo/question.jsonl

Each zoo answer has an exact core (fusion/zoo/domains.py); its check pulls the core out of the
domain's fixed phrasing and compares it, so a right answer in the wrong words still counts.
"""

from __future__ import annotations

import re

from fusion.common.errors import FusevalError
from fusion.zoo import domains
from harness.formats.checks import Check, ExactCheck, NumericCheck
from harness.formats.questions import BENCHMARKS_DIR, Question, write_questions


def _phrase_extract(domain: str, turn: int) -> str:
    """A one-group regex for a zoo answer's core: the domain's phrase around it, the final '.' optional.

    Mirrors `fusion.zoo.domains.extract_core`: the text without the phrase is taken whole, as the core."""
    before, _, after = domains.DOMAINS[domain].phrase("\0", turn).partition("\0")
    after = after.rstrip(".")
    head = f"(?:{re.escape(before)})?" if before else ""
    tail = f"(?:{re.escape(after)})?" if after else ""
    return rf"\A\s*{head}(.*?){tail}\.*\s*\Z"


def domain_checks(domain: str, cores: list[str]) -> list[Check]:
    """The checks for a zoo conversation of `domain` whose exact answer cores are `cores` (one per turn)."""
    if domain not in domains.DOMAINS:
        raise FusevalError(f"unknown domain {domain!r}; choose from {sorted(domains.DOMAINS)}")
    out: list[Check] = []
    for turn, core in enumerate(cores):
        if domain in ("arithmetic", "comparison"):
            out.append(NumericCheck(answer=float(core), tolerance=0.0, extract=_phrase_extract(domain, turn)))
        elif domain in ("extraction", "code"):
            out.append(ExactCheck(answer=core, extract=_phrase_extract(domain, turn)))
        else:
            out.append(ExactCheck(answer=core))
    return out


def zoo_questions(per_domain: int = 20, seed: int = 0) -> list[Question]:
    """The tiny zoo's verifiable domains as a question set: test-split questions, exact references.

    Ids are 1000 * (domain number) + k, so each domain has its own block.
    """
    out = []
    for d, name in enumerate(sorted(domains.DOMAINS), 1):
        for k, conv in enumerate(domains.generate(name, per_domain, seed, "test", unique=True)):
            refs = [m["content"] for m in conv.messages if m["role"] == "assistant"]
            out.append(Question(question_id=1000 * d + k + 1, category=name, turns=conv.prompt_turns(), reference=refs,
                                checks=domain_checks(name, conv.answers)))
    return out


if __name__ == "__main__":
    write_questions(BENCHMARKS_DIR / "zoo" / "question.jsonl", zoo_questions())
