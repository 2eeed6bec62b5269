"""The report decides first: on a demo-shaped run, the decision block opens the HTML, report.md and the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.analysis.report import report_data
from harness.store import Store
from reports.render import decision_lines, render_report
from tests.harness import demo_shaped


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    db = tmp_path_factory.mktemp("decide") / "fuseval.db"
    run_id = demo_shaped.build(db)
    with Store(db) as store:
        data = report_data(store, run_id, n_boot=1000)
    return data, render_report(data, db.parent / "report")


def test_decision_per_recipe_against_control_and_pivot(run):
    data, _ = run
    d = data.decision
    assert (d.bench, d.judge, d.level, d.margin, d.gate_baseline) == ("zoo", demo_shaped.PROG, 0.9, 0.05, "control")
    assert d.baselines == ["control", "pivot"]  # the trained baseline first
    assert {(v.recipe, v.baseline) for v in d.verdicts} == {(r, b) for r in demo_shaped.RECIPES
                                                             for b in ("control", "pivot")}
    assert all(v.seeds == 2 and v.questions == 100 and v.low <= v.diff <= v.high for v in d.verdicts)
    bad = next(v for v in d.verdicts if (v.recipe, v.baseline) == ("fused-dare_ties-d0.3", "control"))
    assert bad.outcome == "regressed"
    assert [r.recipe for r in d.ranking][-1] == "fused-dare_ties-d0.3"
    assert sum(r.p_best for r in d.ranking) == pytest.approx(1.0)
    assert "gold-label training (control)" in d.answer
    # the gate of the suite decides per recipe, with its seeds combined
    assert {g.candidate for g in data.gates} == set(demo_shaped.RECIPES) and all(g.seeds == 2 for g in data.gates)


def test_a_bench_without_grades_is_one_line(run):
    data, out = run
    assert len(data.empty_benches) == 1 and "all 156 judgments were missing" in data.empty_benches[0]  # 13 x 6 x 2
    assert set(data.scores["bench"]) == {"zoo"}
    assert out["md"].read_text().count("general · judge") == 1


def test_report_md_opens_with_the_verdicts_against_the_control(run):
    data, out = run
    head = out["md"].read_text().splitlines()[:25]
    assert head[0].startswith("# ") and any(line.startswith("**Decision**") for line in head)
    for recipe in demo_shaped.RECIPES:
        row = next(line for line in head if line.startswith(f"| {recipe.replace('_', chr(92) + '_')} |"))
        assert re.search(r"\| [+\u2212]?\d\.\d\d \([+\u2212]?\d\.\d\d to [+\u2212]?\d\.\d\d\) "
                         r"(improved|equivalent|regressed|inconclusive) \|", row), row
    assert any(line.startswith("Gate vs control") for line in head)


def test_cli_closing_lines_are_the_decision(run):
    data, _ = run
    lines = decision_lines(data)
    assert len(lines) <= 12 and lines[0].startswith("Decision")
    assert sum(line.startswith("  fused-") for line in lines) == 5
    assert all("vs control" in line and "vs pivot" in line for line in lines if line.startswith("  fused-"))


def test_html_decides_first_and_folds_the_detail(run):
    _, out = run
    html = out["html"].read_text()
    assert html.index('<section id="decision">') < html.index("<nav>") < html.index('<h2 id="scores">')
    assert html.index('<h2 id="method">') < html.index('<h2 id="detail">') < html.index('<details id="examples">')
    assert "\\ufffd" in html and "\ufffd" not in html  # undecodable bytes shown, not silently replaced
    assert "two-way seeds × questions random-effects model" in html  # the method is stated
    for fact in ("clusters", "resamples", "levels", "seeds", "judges", "generation", "versions", "chat templates",
                 "git sha"):
        assert f"<th>{fact}</th>" in html


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(),
                    reason="chromium is not installed (apt-get install chromium)")
def test_first_screen_decides_in_headless_chromium(run):
    """At 1400x900: the decision block ends on the first screen, the page (detail folded) is at most 6 screens,
    and no figure text renders below 10 px."""
    from tests.reports.browser import measure

    _, out = run
    m = measure(out["html"], width=1400, height=900)
    print(f"page {m['page_height']} px = {m['screens']:.2f} screens; decision ends at {m['decision_bottom']:.0f} px; "
          f"smallest figure text {m['min_figure_text_px']:.1f} px")
    assert m["decision_bottom"] is not None and m["decision_bottom"] <= min(900, m["viewport"]["height"])
    assert m["page_height"] <= 6 * 900
    assert m["min_figure_text_px"] >= 10
    assert all(f["client_width"] <= f["natural_width"] for f in m["figures"])  # no figure is blown up or squeezed


def test_method_table_shows_the_positive_control_suites_latest_verdicts(tmp_path):
    from harness.analysis.results import gate_run

    db = tmp_path / "pc.db"
    first = demo_shaped.build(db)
    with Store(db) as store:
        config = store.run(first)["config"]
        assert "positive control" not in dict(report_data(store, first, n_boot=500).method)  # none named
        # the same shape recorded as the positive control's suite, then the demo run naming it
        control_run = store.start_run(suite="demo-known-effect")
        store.end_run(control_run, config={**config, "suite": {**config["suite"], "name": "demo-known-effect"}})
        store.end_run(first, config={**config, "suite": {**config["suite"], "positive_control": "demo-known-effect"}})
        facts = dict(report_data(store, first, n_boot=500).method)
        gates = gate_run(store, store.run(control_run), "control", 0.05, 0.9, n_boot=500)
    fact = facts["positive control"]
    assert fact.startswith(f"suite demo-known-effect, run {control_run} (fusion must help there): ")
    assert all(g.sentence in fact for g in gates) and len(gates) == len(demo_shaped.RECIPES)
    assert "teachers' share" not in facts  # the shaped run's models have no fuse_report.json


def test_method_table_without_the_positive_controls_run_says_how_to_get_one(tmp_path):
    db = tmp_path / "pc.db"
    first = demo_shaped.build(db)
    with Store(db) as store:
        config = store.run(first)["config"]
        store.end_run(first, config={**config, "suite": {**config["suite"], "positive_control": "elsewhere"}})
        facts = dict(report_data(store, first, n_boot=500).method)
    assert facts["positive control"].startswith("suite elsewhere not run yet in this store")


def test_method_table_shows_the_teachers_share_from_the_fusions_report(tmp_path):
    import json

    db = tmp_path / "pc.db"
    first = demo_shaped.build(db)
    fused = tmp_path / "fused" / "k"
    (fused / "seed-0" / "merged").mkdir(parents=True)
    (fused / "fuse_report.json").write_text(json.dumps({"stage1": {
        "source_numbers": {"teacher_token_share": {"arithmetic": 0.994, "code": 0.0, "comparison": 0.7567}},
        "source_records": {"teacher_token_share": {"code": 0.0}}}}))
    with Store(db) as store:
        config = store.run(first)["config"]
        models = [{**m, "path": str(fused / f"seed-{m['seed']}" / "merged")} if m["kind"] == "fuse" else m
                  for m in config["models"]]
        store.end_run(first, config={**config, "models": models})
        facts = dict(report_data(store, first, n_boot=500).method)
    assert facts["teachers' share"].endswith("(others 0%): source_numbers: arithmetic 99%, comparison 76%; "
                                             "source_records: none")


def test_a_run_without_fusion_is_answered_against_its_baseline_not_the_teachers():
    from harness.analysis.wording import recipe_answer
    from reports.data import Verdict

    vs = [Verdict("ties", "base", 0.5, 0.39, 0.61, 0.9, 1, 50, "improved"),
          Verdict("linear", "base", 0.04, -0.02, 0.10, 0.9, 1, 50, "inconclusive")]
    text = recipe_answer(vs, None, 0.05, base="base")
    assert text.startswith("Yes: ties beats base by more than the margin ±0.05") and "teacher" not in text
    text = recipe_answer(vs[1:], None, 0.05, base="base")
    assert text.startswith("Not shown: no recipe beats base by more than ±0.05") and "linear" in text
    assert "no answer" in recipe_answer(vs, None, 0.05, base="other")
