"""`fuseval gate` exit codes on constructed stores: improved, equivalent, regressed, inconclusive."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.results import gate_run, record_results
from harness.formats.questions import Question
from harness.store import AnswerRow, JudgmentRow, Store
from tests.harness.test_cli_generate import fuseval

N = 60


def constructed_store(path, shift: float, noise: float, n: int = N, seed: int = 0) -> str:
    """A finished run: baseline scores ~ 5 + ease, candidate = baseline + shift + noise, per question."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    questions = [Question(question_id=i, category="math" if i % 2 else "writing", turns=[f"question {i}"])
                 for i in range(n)]
    qk = store.add_questions("set", questions)
    ease = rng.normal(0, 1.5, n)
    models = []
    for name, scores in (("base", 5 + ease), ("cand", 5 + ease + shift + rng.normal(0, noise, n))):
        h = store.add_model(name)
        rows = [AnswerRow(h, qk[i], 0, "g", [f"{name} answer {i}"]) for i in range(n)]
        store.add_answers(rows)
        store.add_judgments([JudgmentRow("single", "judge-x", "v1", r.akey, 1, score=float(s))
                             for r, s in zip(rows, scores)])
        models.append({"name": name, "hash": h, "role": "baseline" if name == "base" else "candidate",
                       "group": name, "seed": None, "path": name, "kind": "model", "recipe": None})
    config = {"suite": {"name": "constructed", "examples": 1}, "backend": "none", "workspace": str(path.parent),
              "models": models, "gen_key": "g", "grids": {},
              "benches": [{"name": "set", "judge_ids": ["judge-x"], "lmeval": None, "lmeval_key": None,
                           "question_ids": list(range(n))}]}
    run_id = store.start_run(suite="constructed")
    record_results(store, run_id, config)
    store.end_run(run_id, config=config)
    store.close()
    return run_id


@pytest.mark.parametrize("shift, noise, margin, outcome, rc", [
    (1.0, 0.3, 0.2, "improved", 0),
    (0.0, 0.3, 0.5, "equivalent", 0),
    (-1.0, 0.3, 0.2, "regressed", 1),
    (0.2, 2.0, 0.1, "inconclusive", 0),
])
def test_gate_outcomes_and_exit_codes(tmp_path, shift, noise, margin, outcome, rc):
    db = tmp_path / "s.db"
    run_id = constructed_store(db, shift, noise)
    with Store(db) as store:
        (g,) = gate_run(store, store.run(run_id), "base", margin, n_boot=2000)
    assert g.outcome == outcome and g.low <= g.diff <= g.high
    r = fuseval("gate", run_id, "--baseline", "base", "--margin", margin, "--store", db)
    assert r.returncode == rc, r.stderr
    assert f"cand vs base: {outcome}" in r.stdout and "90% interval" in r.stdout and "margin" in r.stdout
    if outcome == "inconclusive":
        r = fuseval("gate", "latest", "--baseline", "base", "--margin", margin, "--store", db,
                    "--fail-on-inconclusive")
        assert r.returncode == 1


def test_gate_cannot_evaluate(tmp_path):
    db = tmp_path / "s.db"
    constructed_store(db, 0.5, 0.3)
    for args, words in ((["latest", "--baseline", "nobody", "--margin", "0.1"], "nobody"),
                        (["latest", "--baseline", "base", "--margin", "-0.1"], "margin"),
                        (["no-such-run", "--baseline", "base", "--margin", "0.1"], "no-such-run"),
                        (["latest", "--baseline", "base", "--margin", "0.1", "--bench", "other"], "other")):
        r = fuseval("gate", *args, "--store", db)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    r = fuseval("gate", "latest", "--baseline", "base", "--margin", "0.1", "--store", tmp_path / "none.db")
    assert r.returncode == 2 and "no store" in r.stderr


def seeded_store(path, shifts: dict[int, float], n: int = N, seed: int = 1) -> str:
    """A finished run with a seeded control and a fuse recipe: fused@s = control@s + shifts[s] + noise."""
    rng = np.random.default_rng(seed)
    store = Store(path)
    qk = store.add_questions("set", [Question(question_id=i, category="math", turns=[f"q {i}"]) for i in range(n)])
    ease = rng.normal(0, 1.0, n)
    models = []

    def add(name, group, s, role, scores):
        h = store.add_model(name)
        rows = [AnswerRow(h, qk[i], 0, "g", [f"{name} {i}"]) for i in range(n)]
        store.add_answers(rows)
        store.add_judgments([JudgmentRow("single", "judge-x", "v1", r.akey, 1, score=float(x))
                             for r, x in zip(rows, scores)])
        models.append({"name": name, "hash": h, "role": role, "group": group, "seed": s, "path": name,
                       "kind": "fuse", "recipe": None})

    for s, shift in shifts.items():
        control = 5 + ease + rng.normal(0, 0.2, n)
        add(f"control@s{s}", "control", s, "baseline", control)
        add(f"fused@s{s}", "fused", s, "candidate", control + shift + rng.normal(0, 0.2, n))
    config = {"suite": {"name": "seeded", "examples": 1}, "backend": "none", "workspace": str(path.parent),
              "models": models, "gen_key": "g", "grids": {},
              "benches": [{"name": "set", "judge_ids": ["judge-x"], "lmeval": None, "lmeval_key": None,
                           "question_ids": list(range(n))}]}
    run_id = store.start_run(suite="seeded")
    store.end_run(run_id, config=config)
    store.close()
    return run_id


def test_gate_decides_per_recipe_across_seeds(tmp_path):
    """Seeds that disagree (one +0.6, one −0.6): each seed alone is decided, the recipe is not (exit 0);
    --per-seed gates each seed (one regressed: exit 1). Seeds that agree on −0.5: the recipe regressed."""
    db = tmp_path / "split.db"
    seeded_store(db, {0: 0.6, 1: -0.6})
    r = fuseval("gate", "latest", "--baseline", "control", "--margin", "0.1", "--store", db)
    assert r.returncode == 0, r.stderr
    assert "fused (2 seeds) vs control: inconclusive" in r.stdout and r.stdout.count("\n") >= 1
    r = fuseval("gate", "latest", "--baseline", "control", "--margin", "0.1", "--store", db, "--per-seed")
    assert r.returncode == 1
    assert "fused@s0 vs control@s0: improved" in r.stdout and "fused@s1 vs control@s1: regressed" in r.stdout
    db = tmp_path / "down.db"
    seeded_store(db, {0: -0.5, 1: -0.55})
    r = fuseval("gate", "latest", "--baseline", "control", "--margin", "0.1", "--store", db)
    assert r.returncode == 1 and "fused (2 seeds) vs control: regressed" in r.stdout, r.stdout
    with Store(db) as store:
        (g,) = gate_run(store, store.run("latest"), "control", 0.1, n_boot=2000)
    assert g.seeds == 2 and g.high < -0.1
