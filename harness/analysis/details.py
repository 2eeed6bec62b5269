"""The report's supporting detail: what each model was built from and served by, examples, merge weights,
and how the numbers were computed (clusters, resamples, levels, seeds, judges, generation, versions).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.analysis.recipes import METHOD
from harness.analysis.results import finite_or_none, gate_run
from harness.store import Store
from reports.data import Example
from reports.fmt import fmt_interval, fmt_level, fmt_number


def merge_weights(models: list[dict]) -> dict:
    out = {}
    for m in models:
        p = Path(m["path"]) / "fuseval_merge_weights.json"
        if p.is_file():
            weights = json.loads(p.read_text())
            recipe = Path(m["path"]) / "fuseval_recipe.yml"
            inputs = []
            if recipe.is_file():
                import yaml

                cfg = (yaml.safe_load(recipe.read_text()) or {}).get("config", {})
                inputs = [Path(e["model"]).name for e in cfg.get("models", [])]
            n = len(next(iter(weights.values()))["weights"]) if weights else 0
            out[m["name"]] = {"inputs": inputs if len(inputs) == n else [f"input {i}" for i in range(n)],
                              "weights": {k: v["weights"] for k, v in weights.items()}}
    return out


def examples(store: Store, config: dict, n: int, scores: pd.DataFrame) -> list[Example]:
    """Up to n questions side by side: the first question of each category, bench after bench."""
    out: list[Example] = []
    for bench in (b for b in config["benches"] if not b.get("lmeval")):
        if len(out) >= n:
            break
        answers = {m["name"]: {a["question_id"]: a["turns"] for a in store.answers(
            m["hash"], bench["name"], config["gen_key"]) if a["sample"] == 0} for m in config["models"]}
        qs = {r[0]: (r[1], json.loads(r[2])) for r in store.db.execute(  # question_id is stored json-encoded
            "SELECT b.question_id, q.category, q.turns FROM bench_questions b JOIN questions q ON q.qkey=b.qkey "
            "WHERE b.bench=?", (bench["name"],))}
        cats_seen: set[str] = set()
        for qid in bench["question_ids"]:
            cat, turns = qs.get(json.dumps(qid), (None, None))
            if turns is None or cat in cats_seen:
                continue
            cats_seen.add(cat)
            sc = scores[(scores["bench"] == bench["name"]) & (scores["question_id"].map(repr) == repr(qid))]
            first = sc[sc["sample"] == 0].sort_values("turn")
            per = {name: [finite_or_none(x) for x in first[first["model"] == name]["score"]] for name in answers}
            out.append(Example(bench["name"], qid, cat, turns, {k: v.get(qid, []) for k, v in answers.items()}, per))
            if len(out) >= n:
                break
    return out


def served_by(store: Store, config: dict, model_hash: str) -> str:
    """The backends that wrote this model's answers for the run (answers are reused across runs and backends)."""
    kinds = {a["meta"].get("backend") or "unrecorded" for b in config["benches"] if not b.get("lmeval")
             for a in store.answers(model_hash, b["name"], config["gen_key"])}
    return ", ".join(sorted(kinds))


def recipe_summary(kind: str, recipe: str | None) -> str:
    """What a model was built from, in a few words (the whole recipe stays in fuseval_recipe.yml beside it)."""
    import yaml

    if not recipe:
        return {"model": "checkpoint"}.get(kind, kind)
    try:
        doc = yaml.safe_load(recipe) or {}
    except yaml.YAMLError:
        return kind
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    if cfg.get("merge_method"):
        params = ", ".join(f"{k} {v}" for k, v in (cfg.get("parameters") or {}).items())
        n = len(cfg.get("models") or [])
        return f"{cfg['merge_method']} merge of {n} model{'s' * (n != 1)}" + (f" ({params})" if params else "")
    train = doc.get("train") if isinstance(doc.get("train"), dict) else {}
    if doc.get("fuseval") and train:
        return f"{doc['fuseval']} ({train.get('steps')} steps, λ {train.get('lam')})"
    return kind




def _prompt_versions(store: Store, judges: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for judge, version in store.db.execute(
            f"SELECT DISTINCT judge, prompt_version FROM judgments WHERE judge IN ({','.join('?' * len(judges))}) "
            "ORDER BY judge, prompt_version", judges):
        out.setdefault(judge, []).append(version)
    return out


def _templates(store: Store, config: dict) -> str:
    """The chat-template hashes the answers recorded, each with its models (a wrong template is visible)."""
    models_of: dict[str, list[str]] = {}
    for m in config["models"]:
        hashes = {a["meta"].get("chat_template") or "the endpoint's own" for b in config["benches"]
                  if not b.get("lmeval") for a in store.answers(m["hash"], b["name"], config["gen_key"])}
        for h in sorted(hashes):
            models_of.setdefault(h, []).append(m["name"])
    n = len(config["models"])
    return "; ".join(f"{h}: {'all ' + str(n) + ' models' if len(ms) == n else ', '.join(ms)}"
                     for h, ms in models_of.items()) or "no answers recorded"


def aa_fact(store: Store, suite: str) -> str:
    """The suite's latest A/A check (`fuseval aa`): how often the gate raised a false alarm."""
    run_id = store.latest_run(f"{suite}/aa")
    if run_id is None:
        return "not run yet for this suite (fuseval aa SUITE: one model against itself, gated many times)"
    r = store.run(run_id)["config"]
    rates = "; ".join(f"false {o} {r[f'false_{o}']['hits']}/{r['pairs']} (95% interval "
                      f"{fmt_interval(*r[f'false_{o}']['interval'])})" for o in ("improved", "regressed"))
    return (f"{r['model']} against itself on {r['bench']}, {r['pairs']} pairs answered at temperature "
            f"{r['temperature']:g} under other seeds, margin ±{fmt_number(r['margin'])} at {fmt_level(r['level'])}: "
            f"{rates} (run {run_id})")


def teacher_share_fact(config: dict) -> str | None:
    """What the teachers taught: per fusion and source, the share of fusion tokens whose target came from that
    source rather than the pivot itself, per domain (from each fusion's fuse_report.json); None without fusions."""
    reports: dict[Path, dict] = {}
    for m in config["models"]:
        parents = Path(m["path"] or "").parents
        path = parents[1] / "fuse_report.json" if m.get("kind") == "fuse" and len(parents) > 1 else None
        if path and path not in reports and path.is_file():
            reports[path] = json.loads(path.read_text())
    parts = []
    for rep in reports.values():
        for source, st in rep.get("stage1", {}).items():
            shares = {d: v for d, v in st.get("teacher_token_share", {}).items() if v > 0}
            label = "every source (joint)" if source == "joint" else source
            parts.append(f"{label}: " + (", ".join(f"{d} {v:.0%}" for d, v in shares.items()) or "none"))
    if not parts:
        return None
    return ("share of the fusion data's response tokens whose target came from the source rather than the pivot, "
            "per domain (others 0%): " + "; ".join(parts))


def positive_control_fact(store: Store, suite: str, n_boot: int) -> str:
    """The latest run of the suite's positive control (a world with an effect built in): its gate verdicts."""
    run_id = store.latest_run(suite)
    if run_id is None:
        return f"suite {suite} not run yet in this store (fuseval demo runs it; or fuseval run on its file)"
    run = store.run(run_id)
    gate = run["config"]["suite"].get("gate")
    if not gate:
        return f"suite {suite}, run {run_id}: no gate in that suite, so no verdict"
    gates = gate_run(store, run, gate["baseline"], gate["margin"], gate["level"], gate.get("bench"),
                     gate.get("judge"), n_boot)
    return f"suite {suite}, run {run_id} (fusion must help there): " + " ".join(g.sentence for g in gates)


def judge_reliability(store: Store, bench: str, judge: str) -> str | None:
    """How far one LLM judge's verdicts can be trusted on a bench: re-judge spread and order flips, if measured.

    Re-judge spread: over answer turns judged twice or more (judge.repeats), how often two verdicts on the
    same answer differ and by how much on average. Order flips: over pairwise judgments (fuseval pairwise),
    how often swapping the two answers' places changed the verdict."""
    parts = []
    sc = store.scores(bench=bench, judge=judge).dropna(subset=["score"])
    grades = sc.groupby(["akey", "turn"])["score"].agg(list)
    twice = [g[:2] for g in grades if len(g) >= 2]
    if twice:
        gaps = [abs(a - b) for a, b in twice]
        parts.append(f"re-judged: {sum(g > 0 for g in gaps)} of {len(twice)} answer turns got two different "
                     f"grades, {fmt_number(sum(gaps) / len(gaps))} apart on average")
    flips = store.pairs(bench=bench, judge=judge)["flipped"].dropna()
    if len(flips):
        parts.append(f"swapping the answers' places changed {int(flips.sum())} of {len(flips)} pairwise verdicts "
                     f"({flips.mean():.0%})")
    return f"{judge} on {bench}: " + "; ".join(parts) if parts else None


def method_facts(store: Store, run: dict, n_boot: int, level: float, gate: dict | None) -> list[tuple[str, str]]:
    """How these numbers were computed: clusters, resamples, levels, seeds, judges, generation, versions."""
    config = run["config"]
    benches = [b for b in config["benches"] if not b.get("lmeval")]
    judges = sorted({j for b in benches for j in b.get("judge_ids", [])})
    versions = _prompt_versions(store, judges) if judges else {}
    seeds = sorted({m["seed"] for m in config["models"] if m["seed"] is not None})
    env = json.loads(run.get("environment") or "{}")
    gen = config["suite"].get("generation", {})
    facts = [
        ("clusters", "questions: every turn, sample and judge repeat of one question is resampled together ("
                     + "; ".join(f"{b['name']}: {len(b['question_ids'])} questions" for b in benches) + ")"),
        ("resamples", f"{n_boot:,} cluster-bootstrap resamples per interval; expanded percentile intervals "
                      "(percentiles at Φ(√(g/(g−1))·t_{α/2, g−1}) for g questions, so that few questions widen "
                      "them); the analytic clustered standard error alongside as a cross-check"),
        ("coverage", "simulated (benchmarks/validity/coverage.py): these 95% intervals cover 0.93–0.96 of the "
                     "time from 10 questions up, on MT-Bench-shaped 1–10 grades and on 0/1 checks; a recipe's "
                     "interval over 2–3 seeds covers less (about 0.90) when its seeds vary more than the "
                     "question noise, and the decision flags such cases"),
        ("levels", f"tables and figures: {fmt_level(level)} intervals"
                   + (f"; verdicts and the gate: {fmt_level(gate['level'])} two-sided intervals (one-sided "
                      f"{fmt_level(1 - (1 - gate['level']) / 2)} each side) against the margin ±"
                      f"{fmt_number(gate['margin'])}, baseline {gate['baseline']}" if gate else "; no gate")),
        ("seeds", (f"training seeds {', '.join(map(str, seeds))}. " if seeds else "no training seeds. ") + METHOD),
        ("judges", "; ".join(f"{j} (prompt {', '.join(versions.get(j, ['n/a']))})" for j in judges) or "none"),
        ("generation", json.dumps(gen, sort_keys=True) + f" (key {config['gen_key']}); served by "
                       f"{config['backend']}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in env.items() if k != "platform") or "not recorded"),
        ("chat templates", _templates(store, config)),
        ("git sha", run.get("git_sha") or "not recorded"),
        ("A/A check", aa_fact(store, config["suite"]["name"])),
    ]
    if control := config["suite"].get("positive_control"):
        facts.append(("positive control", positive_control_fact(store, control, n_boot)))
    if taught := teacher_share_fact(config):
        facts.append(("teachers' share", taught))
    llm = [r for b in benches for j in b.get("judge_ids", []) if j.startswith("llm/")
           if (r := judge_reliability(store, b["name"], j))]
    if llm:
        facts.append(("judge reliability", "; ".join(llm)))
    return facts
