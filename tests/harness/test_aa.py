"""The A/A check on the tiny world: the pivot against itself, answered under other sampling seeds."""

from __future__ import annotations

import pytest
import yaml

from harness.store import Store
from tests.harness.test_cli_generate import fuseval


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_aa_gates_a_model_against_itself_and_the_report_shows_it(world, tmp_path):
    suite = tmp_path / "aa.yml"
    suite.write_text(yaml.safe_dump({
        "name": "aa-mini", "baselines": [{"name": "pivot", "model": str(world / "pivot")}],
        "candidates": [{"name": "same", "model": str(world / "pivot")}],
        "benchmarks": [{"questions": "zoo", "limit": 10}], "backend": {"kind": "transformers"},
        "generation": {"max_new_tokens": 16}, "gate": {"baseline": "pivot", "margin": 0.05}}))
    db, ws = tmp_path / "runs.db", tmp_path / "ws"
    r = fuseval("aa", suite, "--pairs", "3", "--workspace", ws, "--store", db)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "A/A: pivot against itself on zoo (3 pairs" in r.stdout
    assert "false improved: " in r.stdout and "false regressed: " in r.stdout and "expected 5% or less" in r.stdout
    with Store(db) as store:
        cfg = store.run(store.latest_run("aa-mini/aa"))["config"]
        # 6 answer sets of 10 questions, each under its own generation key; every pair gated
        n_keys = store.db.execute("SELECT count(DISTINCT gen_key) FROM answers").fetchone()[0]
    assert n_keys == 6 and len(cfg["outcomes"]) == 3
    assert set(cfg["outcomes"]) <= {"improved", "equivalent", "regressed", "inconclusive"}
    assert cfg["false_improved"]["hits"] == cfg["outcomes"].count("improved")
    # a second check with more pairs reuses the answers it has
    r = fuseval("aa", suite, "--pairs", "4", "--workspace", ws, "--store", db)
    assert r.returncode == 0, r.stderr[-2000:]
    with Store(db) as store:
        assert store.db.execute("SELECT count(DISTINCT gen_key) FROM answers").fetchone()[0] == 8
    # the suite's report shows the latest check
    assert fuseval("run", suite, "--workspace", ws, "--store", db).returncode == 0
    html = next((ws / "reports").glob("*/report.html")).read_text()
    assert "<th>A/A check</th>" in html and "pivot against itself on zoo, 4 pairs" in html
    # ... and, the suite having no samples or judge repeats of its own, the noise split of the check's answers
    assert "Where the noise comes from" in html and "pivot (A/A check, temperature 0.7)" in html
    with Store(db) as store:
        from harness.analysis.noise import aa_noise

        (row,) = aa_noise(store, "aa-mini").itertuples()
        keys = store.run(store.latest_run("aa-mini/aa"))["config"]["gen_keys"]
        scores = store.scores(bench="zoo")
    assert (row.questions, row.samples, row.repeats) == (10, 8, 1)
    # independent check: the generation part is the mean within-question variance of the per-sample scores
    # (turns averaged first), the question part what remains of the between-question variance
    cells = scores[scores["gen_key"].isin(keys)].groupby(["question_id", "gen_key"])["score"].mean()
    within = cells.groupby(level=0).var(ddof=1).mean()
    between = cells.groupby(level=0).mean().var(ddof=1)
    assert abs(row.sigma2_gen - within) < 1e-9
    assert abs(row.omega2 - max(between - within / 8, 0.0)) < 1e-9
    # an A/A check is a run of its own, but never the "latest" run a report or a gate means
    assert fuseval("aa", suite, "--pairs", "4", "--workspace", ws, "--store", db).returncode == 0
    r = fuseval("report", "latest", "--store", db, "--out", tmp_path / "again")
    assert r.returncode == 0, r.stderr[-2000:]
