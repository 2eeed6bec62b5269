"""A finished run shaped like the demo's, built straight into a store (no models, no serving): for report tests.

13 models: pivot; control@s0, control@s1 (gold-only training, seeded); five fuse recipes x two seeds;
a zoo bench of 100 two-turn questions graded 0/1 by programmatic checks; an MT-Bench-style bench whose
LLM judge could not grade anything (every verdict missing); lm-eval metrics; one ablation grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.analysis.results import record_results
from harness.formats.questions import Question
from harness.store import AnswerRow, JudgmentRow, Store

CATEGORIES = ["arithmetic", "code", "comparison", "extraction", "formatting"]
RECIPES = {"fused-varm": 0.0, "fused-ties-d0.3": -0.05, "fused-ties-d0.7": -0.05, "fused-dare_ties-d0.3": -0.6,
           "fused-dare_ties-d0.7": -0.05}
GRID = {"fused-ties-d0.3": {"method": "ties", "density": 0.3}, "fused-ties-d0.7": {"method": "ties", "density": 0.7},
        "fused-dare_ties-d0.3": {"method": "dare_ties", "density": 0.3},
        "fused-dare_ties-d0.7": {"method": "dare_ties", "density": 0.7}}
PROG = "programmatic/prog-v1"
LLM = "llm/tiny-judge@0123456789/fuseval-judge-v1/text/t0/n16"


def _models() -> list[tuple[str, str, int | None, str, float]]:
    """(name, group, seed, role, mean accuracy) of each model."""
    out = [("pivot", "pivot", None, "baseline", 0.27)]
    out += [(f"control@s{s}", "control", s, "baseline", 0.72 + 0.03 * s) for s in (0, 1)]
    for recipe, shift in RECIPES.items():
        out += [(f"{recipe}@s{s}", recipe, s, "candidate", 0.72 + 0.03 * s + shift) for s in (0, 1)]
    return out


def build(path: Path, n_questions: int = 100, seed: int = 0) -> str:
    """Fill a store at `path` with the demo-shaped run; returns its run id."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    zoo = [Question(question_id=1000 * (i % 5 + 1) + i, category=CATEGORIES[i % 5], turns=[f"q{i} a", f"q{i} b"])
           for i in range(n_questions)]
    general = [Question(question_id=i, category="writing", turns=[f"write {i}", "shorter"]) for i in range(6)]
    zk, gk = store.add_questions("zoo", zoo), store.add_questions("general", general)
    ease = rng.normal(0, 1.2, n_questions)
    config_models = []
    for name, group, s, role, acc in _models():
        h = store.add_model(name)
        logit = np.log(acc / (1 - acc)) + ease
        rows = [AnswerRow(h, zk[q.question_id], 0, "g", [f"{name} says {i}", "and \ufffd then"])
                for i, q in enumerate(zoo)]
        grows = [AnswerRow(h, gk[i], 0, "g", [f"{name} writes {i}", "short"]) for i in range(6)]
        store.add_answers(rows + grows)
        p = 1 / (1 + np.exp(-logit))
        judged = [JudgmentRow("single", PROG, "prog-v1", r.akey, t, score=float(rng.random() < p[i]))
                  for i, r in enumerate(rows) for t in (1, 2)]
        judged += [JudgmentRow("single", LLM, "fuseval-judge-v1/single/text", r.akey, t, score=None)
                   for r in grows for t in (1, 2)]
        store.add_judgments(judged)
        config_models.append({"name": name, "hash": h, "role": role, "group": group, "seed": s, "path": name,
                              "kind": "fuse" if s is not None else "model", "recipe": None})
    config = {"suite_file": "demo.yml", "backend": "transformers", "workspace": str(path.parent),
              "suite": {"name": "demo", "examples": 2, "gate": {"baseline": "control", "margin": 0.05, "level": 0.9},
                        "generation": {"max_new_tokens": 48}},
              "models": config_models, "gen_key": "g",
              "grids": {"fused-{method}-d{density}": GRID}, "recipes": {},
              "benches": [{"name": "zoo", "judge_ids": [PROG], "lmeval": None, "lmeval_key": None,
                           "question_ids": [q.question_id for q in zoo]},
                          {"name": "general", "judge_ids": [LLM], "lmeval": None, "lmeval_key": None,
                           "question_ids": [q.question_id for q in general]},
                          {"name": "lmeval", "judge_ids": [], "lmeval": ["fuseval_zoo"], "lmeval_key": "k",
                           "question_ids": []}]}
    run_id = store.start_run(suite="demo")
    for m in config_models:
        acc = 0.3 + 0.4 * rng.random()
        for task in ("fuseval_zoo", "fuseval_zoo_arithmetic"):
            store.add_metrics(run_id, m["hash"], f"{task}@k", [{"metric": "acc", "value": acc, "stderr": 0.05},
                                                               {"metric": "acc_norm", "value": acc, "stderr": 0.05}])
    record_results(store, run_id, config)
    store.end_run(run_id, config=config)
    store.close()
    return run_id
