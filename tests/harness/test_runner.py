"""`fuseval run / report / gate / history` end to end on a reduced demo suite, and the suite's bad input."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess

import pytest
import yaml

from harness.run.suite import load_suite
from tests.harness.test_cli_generate import fuseval

FAST_FUSE = {"train": {"steps": 12, "batch_size": 8, "warmup": 2}}


def reduced_suite(world, judge_dir) -> dict:
    fuse = str(world / "fuse.yml")
    return {
        "name": "mini",
        "baselines": [{"name": "pivot", "model": str(world / "pivot")},
                      {"name": "control", "fuse": fuse, "output": "control", "fuse_overrides": FAST_FUSE}],
        "candidates": [{"name": "fused-varm", "fuse": fuse, "fuse_overrides": FAST_FUSE}],
        "grid": [{"name": "fused-{method}", "axes": {"method": ["ties", "dare_ties"]},
                  "candidate": {"fuse": fuse, "fuse_overrides": FAST_FUSE,
                                "fuse_merge": {"method": "{method}", "parameters": {"density": 0.5}}}}],
        "seeds": [0, 1],
        "benchmarks": [{"questions": "zoo", "limit": 10}, {"questions": "general", "limit": 2, "judge": "llm"},
                       {"lmeval": ["fuseval_zoo"], "limit": 2}],
        "backend": {"kind": "transformers"},
        "judge": {"model": str(judge_dir), "backend": "transformers", "max_new_tokens": 8, "order_check": 1,
                  "note": "pipeline check: a tiny judge"},
        "generation": {"max_new_tokens": 16},
        "gate": {"baseline": "pivot", "margin": 0.05},
        "examples": 2,
    }


def _count(db, table):
    with sqlite3.connect(db) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_suite_runs_reports_gates_and_resumes(world, judge_dir, tmp_path):
    suite = tmp_path / "mini.yml"
    suite.write_text(yaml.safe_dump(reduced_suite(world, judge_dir), sort_keys=False))
    db, ws = tmp_path / "runs.db", tmp_path / "ws"
    r = fuseval("run", suite, "--workspace", ws, "--store", db)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = next((ws / "reports").iterdir())
    html, md = (run_dir / "report.html").read_text(), (run_dir / "report.md").read_text()
    models = ["pivot", "control@s0", "control@s1", "fused-varm@s0", "fused-varm@s1", "fused-ties@s0",
              "fused-dare_ties@s1"]
    for name in models:
        md_name = re.escape(name.replace("_", "\\_"))  # Markdown escapes the underscore
        assert name in html and re.search(rf"\| {md_name} \| \d\.\d\d \(\d\.\d\d to \d\.\d\d\) \|", md), name
    assert re.search(r"[+−]?\d\.\d\d \(90% interval [+−]?\d\.\d\d to [+−]?\d\.\d\d\)", md)  # gate sentences
    assert r.stdout.startswith("Decision — zoo") and "  fused-varm: vs control" in r.stdout  # the decision, last
    assert "significan" not in (html + md + r.stdout).lower()
    assert "pipeline check" in html
    assert "ties merge of 2 models (density 0.5)" in html and "gold labels only" in html  # what each was built from
    assert "<td>transformers</td>" in html  # and which backend served its answers
    assert html.count('<table class="examples">') >= 2  # side-by-side answers, one per category
    if shutil.which("chromium"):  # looked at as a person would; the screenshot stays with the run
        base = ["chromium", "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'chrome'}"]
        url = (run_dir / "report.html").resolve().as_uri()
        shot = run_dir / "screenshot.png"
        subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,4000", url], check=True, timeout=120,
                       capture_output=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        dom = subprocess.run([*base, "--dump-dom", url], check=True, timeout=120, capture_output=True,
                             text=True).stdout
        assert dom.count('<img src="data:image/png;base64,') >= 4 and "<script" not in dom.lower()

    assert re.search(r"\| fused-varm@s0 \| fuseval\\_zoo \| \d\.\d\d \(\d\.\d\d to \d\.\d\d\) \|", md)  # lm-eval
    answers, judgments, metrics = _count(db, "answers"), _count(db, "judgments"), _count(db, "metrics")
    assert answers == 9 * 12 and metrics > 9  # 9 models x (10 zoo + 2 general questions); lm-eval per model
    with sqlite3.connect(db) as con:  # judge.order_check: 1 general question, 2 turns, 6 candidates vs pivot
        assert con.execute("SELECT count(*) FROM judgments WHERE kind='pair'").fetchone()[0] == 6 * 2
    r = fuseval("run", suite, "--workspace", ws, "--store", db)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (_count(db, "answers"), _count(db, "judgments"), _count(db, "metrics")) == (answers, judgments, metrics)
    assert "0 of 9 models had work" in r.stderr and "judgments: 0 new" in r.stderr

    # model text is untrusted: an answer that carries markup shows as text in the report
    payload = '<script>alert(1)</script><img src=x onerror=alert(2)>'
    with sqlite3.connect(db) as con:
        con.execute("UPDATE answers SET turns=?", (json.dumps([payload, payload]),))
    r = fuseval("report", "latest", "--store", db, "--out", tmp_path / "again")
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "again" / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in (tmp_path / "again" / "report.md").read_text()
    r = fuseval("history", "--store", db, "--suite", "mini")
    assert r.returncode == 0 and r.stdout.count("fused-varm@s0") == 4  # 2 runs x 2 benches

    # the gate: candidates against the pivot; a negative margin or a stranger baseline cannot be evaluated
    r = fuseval("gate", suite, "--baseline", "pivot", "--margin", "0.05", "--store", db)
    assert r.returncode in (0, 1) and "margin" in r.stdout
    r = fuseval("gate", suite, "--baseline", "control", "--margin", "0.05", "--store", db)  # trained with seeds
    assert r.returncode in (0, 1) and "fused-varm (2 seeds) vs control:" in r.stdout  # per recipe, seeds combined
    r = fuseval("gate", suite, "--baseline", "control", "--margin", "0.05", "--store", db, "--per-seed")
    assert r.returncode in (0, 1) and "fused-varm@s1 vs control@s1:" in r.stdout and "@s0 vs control@s1" not in r.stdout
    r = fuseval("gate", suite, "--baseline", "nobody", "--margin", "0.05", "--store", db)
    assert r.returncode == 2 and "nobody" in r.stderr
    r = fuseval("gate", "latest", "--baseline", "pivot", "--margin", "-1", "--store", db)
    assert r.returncode == 2 and "margin" in r.stderr


def test_suite_bad_input_names_file_and_key(world, judge_dir, tmp_path):
    good = reduced_suite(world, judge_dir)
    cases = [
        ({"candidates": [{"name": "x", "model": str(tmp_path / "missing")}], "gate": None}, "no such checkpoint"),
        ({"benchmarks": ["no-such-bench"]}, "no-such-bench"),
        ({"grid": [{"name": "g-{m}", "axes": {"m": []}, "candidate": {"model": "x"}}]}, "zero candidates"),
        ({"gate": {"baseline": "fused-varm", "margin": 0.1}}, "not a baseline"),
        ({"gate": {"baseline": "pivot", "margin": -0.1}}, "gate.margin"),
        ({"candidates": [{"name": "../../x", "model": "m"}]}, "not a usable name"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ]
    for change, words in cases:
        path = tmp_path / "bad.yml"
        path.write_text(yaml.safe_dump({**good, **change}, sort_keys=False))
        r = fuseval("run", path, "--workspace", tmp_path / "ws", "--store", tmp_path / "bad.db")
        assert r.returncode == 1, (change, r.stderr)
        assert words in r.stderr and str(path) in r.stderr and "Traceback" not in r.stderr, (change, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_grid_expansion_names_and_types(world, judge_dir, tmp_path):
    data = reduced_suite(world, judge_dir)
    data["grid"] = [{"name": "ties-d{d}-w{w}", "axes": {"d": [0.3, 0.7], "w": [1, 2]},
                     "candidate": {"merge": {"merge_method": "ties", "base_model": "b",
                                             "models": [{"model": "m", "parameters": {"density": "{d}",
                                                                                      "weight": "{w}"}}]}}}]
    ls = load_suite(tmp_path / "s.yml", data)
    names = [m.name for m in ls.models]
    assert names[-4:] == ["ties-d0.3-w1", "ties-d0.3-w2", "ties-d0.7-w1", "ties-d0.7-w2"]
    assert ls.models[-1].merge["models"][0]["parameters"] == {"density": 0.7, "weight": 2}  # typed, not strings
    assert ls.grids["ties-d{d}-w{w}"]["ties-d0.7-w1"] == {"d": 0.7, "w": 1}
    assert ls.roles["pivot"] == "baseline" and ls.roles["ties-d0.3-w1"] == "candidate"


@pytest.mark.parametrize("name", ["demo", "demo-known-effect", "nightly", "ablation", "ci-gate", "real-teacher",
                                  "real-cpu"])
def test_example_suites_validate(name, monkeypatch, tmp_path):
    from harness.run.demo import SUITE

    for var in ("FUSEVAL_WORLD", "FUSEVAL_JUDGE", "MODELS", "FUSEVAL_MODELS", "FUSEVAL_REAL"):
        monkeypatch.setenv(var, str(tmp_path))
    ls = load_suite(SUITE.parent / f"{name}.yml")
    assert ls.models and ls.benches
    assert ls.suite.gate is None or ls.roles[ls.suite.gate.baseline] == "baseline"


def test_an_inline_merge_is_keyed_by_its_inputs_contents_not_their_paths(tiny_set, tmp_path):
    from harness.run.runner import build_models
    from harness.store import Store

    moved = tmp_path / "moved"
    shutil.copytree(tiny_set["base"].parent, moved)

    def suite(root):
        data = {"name": "keys", "baselines": [{"name": "base", "model": str(root / "base")}],
                "candidates": [{"name": "lin", "merge": {
                    "merge_method": "linear", "models": [{"model": str(root / v), "parameters": {"weight": 0.5}}
                                                         for v in ("variant1", "variant2")]}}],
                "benchmarks": ["zoo"], "backend": {"kind": "transformers"}}
        p = tmp_path / f"{root.name}.yml"
        p.write_text(yaml.safe_dump(data))
        return load_suite(p)

    said: list[str] = []
    with Store(tmp_path / "s.db") as store:
        first = build_models(suite(tiny_set["base"].parent), store, tmp_path / "ws", "transformers", said.append)
        again = build_models(suite(moved), store, tmp_path / "ws", "transformers", said.append)
    assert first[1].path == again[1].path and [s for s in said if s.startswith("merge lin")] == said[:1]


def test_served_names_on_an_openai_backend_are_not_paths(tmp_path):
    data = {"name": "served", "baselines": [{"name": "base", "model": "meta-llama/Llama-3-8B"}],
            "candidates": [{"name": "local", "model": "models/merged"}], "benchmarks": ["zoo"],
            "judge": {"model": "Qwen/Qwen2.5-72B-Instruct", "backend": "openai", "base_url": "http://127.0.0.1:1/v1"}}
    ls = load_suite(tmp_path / "s.yml", {**data, "backend": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}})
    assert [m.model for m in ls.models] == ["meta-llama/Llama-3-8B", "models/merged"]
    assert ls.suite.judge.model == "Qwen/Qwen2.5-72B-Instruct"
    ls = load_suite(tmp_path / "s.yml", {**data, "backend": {"kind": "transformers"}})
    assert [m.model for m in ls.models] == [str(tmp_path / "meta-llama/Llama-3-8B"), str(tmp_path / "models/merged")]


def test_a_joint_fuse_candidate_is_its_one_target(tmp_path):
    """A fuse candidate whose recipe fuses jointly (stage1: joint) is that recipe's one target; a stage-2
    override on it is refused in one line naming the candidate."""
    from fusion import zoo
    from fusion.common.errors import FusevalError
    from harness.run.runner import build_models
    from harness.store import Store
    from tests.fusion.test_pipeline import _micro

    world = zoo.build_world(tmp_path / "world", _micro())
    joint = {"fuse": str(world / "fuse.yml"), "fuse_overrides": {"train": {"steps": 2, "batch_size": 4},
                                                                 "stage1": "joint", "control": False}}
    data = {"name": "joint", "baselines": [{"name": "pivot", "model": str(world / "pivot")}],
            "candidates": [{"name": "fused-joint", **joint}], "seeds": [0], "benchmarks": ["zoo"],
            "backend": {"kind": "transformers"}}
    with Store(tmp_path / "s.db") as store:
        built = build_models(load_suite(tmp_path / "s.yml", data), store, tmp_path / "ws", "transformers",
                             lambda _: None)
        assert built[1].name == "fused-joint" and built[1].path.endswith("seed-0/target-joint")
        assert not any((tmp_path / "ws" / "fused").glob("*/seed-0/merged"))
        data["candidates"][0]["fuse_merge"] = {"method": "ties"}
        with pytest.raises(FusevalError, match="'fused-joint': fuse_merge needs stage1: pairwise"):
            build_models(load_suite(tmp_path / "s.yml", data), store, tmp_path / "ws", "transformers", lambda _: None)
