"""The tiny zoo's domains as a question set with programmatic checks (benchmarks/zoo/question.jsonl).

    python -m harness.formats.zoo          # rewrite benchmarks/zoo/question.jsonl

Each zoo answer has an exact core (fusion/zoo/domains.py); its check pulls the core out of the
domain's fixed phrasing and compares it, so a right answer in the wrong words still counts.
"""

from __future__ import annotations

import re
from pathlib import Path

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


def conversation_questions(convs) -> list[Question]:
    """Zoo conversations (a world's test.jsonl, `fusion.conversations`) as a question set with checks.

    Ids are 1000 * (domain number) + k as in `zoo_questions`; k counts within the domain."""
    order = {name: d for d, name in enumerate(sorted(domains.DOMAINS), 1)}
    seen: dict[str, int] = {}
    out = []
    for conv in convs:
        seen[conv.domain] = k = seen.get(conv.domain, 0) + 1
        refs = [m["content"] for m in conv.messages if m["role"] == "assistant"]
        out.append(Question(question_id=1000 * order[conv.domain] + k, category=conv.domain,
                            turns=conv.prompt_turns(), reference=refs, checks=domain_checks(conv.domain, conv.answers)))
    return out


def write_world_bench(world) -> Path:
    """world/bench/question.jsonl: the world's own test set (all its domains) as a bench a suite can name."""
    from fusion.conversations import load_conversations

    path = Path(world) / "bench" / "question.jsonl"
    if not path.exists():
        write_questions(path, conversation_questions(load_conversations(Path(world) / "test.jsonl")))
    return path.parent


def zoo_questions(per_domain: int = 20, seed: int = 0) -> list[Question]:
    """The tiny zoo's verifiable domains as a question set: test-split questions, exact references.

    Ids are 1000 * (domain number) + k, so each domain has its own block.
    """
    return conversation_questions([c for name in sorted(domains.DOMAINS)
                                   for c in domains.generate(name, per_domain, seed, "test", unique=True)])


if __name__ == "__main__":
    write_questions(BENCHMARKS_DIR / "zoo" / "question.jsonl", zoo_questions())
