"""Where the noise comes from: variance parts per model with intervals, in the report, from a store with
sampled answers and judge repeats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.analysis.noise import noise_table
from harness.analysis.report import report_data
from harness.analysis.results import record_results
from harness.analysis.stats import variance_components
from harness.formats.questions import Question
from harness.store import AnswerRow, JudgmentRow, Store
from reports.render import render_report

Q, K, J = 40, 3, 2  # questions, samples per question, judge repeats


def build(path) -> str:
    """Two models; score = 5 + question ease (SD 1) + answer noise (SD 0.6) + judge noise (SD 0.3), 2 turns."""
    rng = np.random.default_rng(2)
    store = Store(path)
    qs = [Question(question_id=i, category="writing", turns=[f"q{i}", "more"]) for i in range(Q)]
    qk = store.add_questions("mt", qs)
    ease = rng.normal(0, 1.0, Q)
    models = []
    for name in ("base", "cand"):
        h = store.add_model(name)
        rows = [AnswerRow(h, qk[i], s, "g", [f"{name} {i} {s}", "x"]) for i in range(Q) for s in range(K)]
        store.add_answers(rows)
        judged = []
        for r in rows:
            i = int(r.turns[0].split()[1])
            answer = 5 + ease[i] + rng.normal(0, 0.6)
            judged += [JudgmentRow("single", "judge-x", "v1", r.akey, t, repeat=j,
                                   score=float(answer + rng.normal(0, 0.3))) for t in (1, 2) for j in range(J)]
        store.add_judgments(judged)
        models.append({"name": name, "hash": h, "role": "baseline" if name == "base" else "candidate",
                       "group": name, "seed": None, "path": name, "kind": "model", "recipe": None})
    config = {"suite": {"name": "noisy", "examples": 0}, "backend": "none", "workspace": str(path.parent),
              "models": models, "gen_key": "g", "grids": {},
              "benches": [{"name": "mt", "judge_ids": ["judge-x"], "lmeval": None, "lmeval_key": None,
                           "question_ids": list(range(Q))}]}
    run_id = store.start_run(suite="noisy")
    record_results(store, run_id, config)
    store.end_run(run_id, config=config)
    store.close()
    return run_id


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    db = tmp_path_factory.mktemp("noise") / "s.db"
    run_id = build(db)
    with Store(db) as store:
        return report_data(store, run_id, n_boot=500), store.scores(bench="mt")


def test_parts_match_the_variance_components_of_the_turn_averaged_cells(data):
    d, df = data
    row = d.noise.set_index("model").loc["cand"]
    part = df[df["model"] == "cand"]
    cells = part.groupby(["question_id", "sample", "repeat"])["score"].mean().reset_index()
    vc = variance_components(cells["score"], cells["question_id"], cells["sample"], cells["repeat"])
    assert (row["questions"], row["samples"], row["repeats"]) == (Q, K, J)
    for p in ("omega2", "sigma2_gen", "sigma2_judge"):
        assert row[p] == pytest.approx(getattr(vc, p))
        assert row[f"{p}_low"] <= row[p] <= row[f"{p}_high"]
    # the simulated truth: ω² = 1, σ²_gen = 0.36, σ²_judge = 0.09 / 2 (turns averaged): inside the intervals
    assert row["omega2_low"] <= 1.0 <= row["omega2_high"]
    assert row["sigma2_gen_low"] <= 0.36 <= row["sigma2_gen_high"]
    assert row["sigma2_judge_low"] <= 0.045 <= row["sigma2_judge_high"]
    # doubling questions halves every part: the half-width shrinks by √2; the others shrink less
    assert row["half_questions"] == pytest.approx(row["half_now"] / np.sqrt(2))
    assert row["half_now"] > row["half_samples"] > row["half_questions"] and row["half_repeats"] < row["half_now"]


def test_the_report_says_which_knob_buys_precision(data, tmp_path):
    d, _ = data
    out = render_report(d, tmp_path)
    html, md = out["html"].read_text(), out["md"].read_text()
    for text in (html, md):
        assert "Where the noise comes from" in text
        assert "What shrinks the interval most: base: twice the questions" in text


def test_a_run_without_samples_or_repeats_says_so(tmp_path):
    df = pd.DataFrame({"bench": "b", "judge": "j", "model": "m", "question_id": range(10), "sample": 0, "repeat": 0,
                       "turn": 1, "score": np.arange(10.0)})
    assert noise_table(df).empty
