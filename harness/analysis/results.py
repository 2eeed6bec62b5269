"""A recorded run's numbers, out of the store: scores, differences, gates, seeds, ablations, history.

    data = report_data(store, "latest")          # a reports.ReportData, every number with its interval
    gates = gate_run(store, run_id, baseline="pivot", margin=0.05)

Everything is computed from the store and the run's config (which names its models by content
hash, its benches, question ids, generation key and judges), so a report or a gate can be redone
at any time without serving anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.common.errors import FusevalError
from harness.analysis import stats
from harness.analysis.summary import ALL, difference_table, paired_rows, score_table
from harness.analysis.wording import gate_sentence
from harness.store import Store
from reports.data import SEED_COLUMNS, Example, Gate, ReportData

OVERALL = ALL


def run_scores(store: Store, config: dict) -> pd.DataFrame:
    """This run's single-answer judgments: its models (by hash, under their names in the suite), its
    generation settings, its questions and judges; one row per judged turn, with a `bench` column."""
    frames = []
    for bench in config["benches"]:
        if bench.get("lmeval"):
            continue
        df = store.scores(bench=bench["name"])
        df = df[(df["gen_key"] == config["gen_key"]) & df["judge"].isin(bench["judge_ids"])]
        df = df[df["question_id"].map(repr).isin({repr(q) for q in bench["question_ids"]})]
        for m in config["models"]:
            part = df[df["model_hash"] == m["hash"]]
            if len(part):
                frames.append(part.assign(model=m["name"]))
    if not frames:
        return pd.DataFrame(columns=["model", "bench", "question_id", "category", "turn", "sample", "repeat", "judge",
                                     "score"])
    return pd.concat(frames, ignore_index=True)


def _per_bench(df: pd.DataFrame, fn, **kw) -> pd.DataFrame:
    parts = [fn(part, **kw).assign(bench=bench) for bench, part in df.groupby("bench", sort=False)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def record_results(store: Store, run_id: str, config: dict) -> None:
    """The run's overall score per model, bench and judge, kept for `fuseval history` and trend plots."""
    df = run_scores(store, config)
    if df.empty:
        return
    table = _per_bench(df, score_table, by_category=False, n_boot=2000)
    hashes = {m["name"]: m["hash"] for m in config["models"]}
    rows = [{"model": r.model, "model_hash": hashes[r.model], "bench": r.bench, "judge": r.judge,
             "mean": _f(r.mean), "low": _f(r.low), "high": _f(r.high), "questions": int(r.questions)}
            for r in table.itertuples()]
    store.add_results(run_id, config["suite"]["name"], rows)


def _f(x) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _gate_target(config: dict, bench: str | None, judge: str | None) -> tuple[str, str]:
    benches = [b for b in config["benches"] if not b.get("lmeval")]
    if not benches:
        raise FusevalError("the run has no question benchmarks to gate on")
    if bench is None:
        chosen = benches[0]
    else:
        chosen = next((b for b in benches if b["name"] == bench), None)
        if chosen is None:
            raise FusevalError(f"bench {bench!r} is not in the run (it has {', '.join(b['name'] for b in benches)})")
    ids = [j for j in chosen["judge_ids"] if judge is None or judge in j]
    if not ids:
        raise FusevalError(f"no judge of bench {chosen['name']!r} matches {judge!r}")
    return chosen["name"], ids[0]


def gate_run(store: Store, run: dict, baseline: str, margin: float, level: float = 0.90, bench: str | None = None,
             judge: str | None = None, n_boot: int = 10_000) -> list[Gate]:
    """Each candidate of the run against `baseline` on one bench and judge: the four-way outcome."""
    if not margin >= 0:
        raise FusevalError(f"margin must be zero or positive, got {margin}")
    config = run["config"]
    names = [m["name"] for m in config["models"]]
    # a baseline trained with seeds (the control) is named by its group and met by each seed's own model
    bases = [m for m in config["models"] if m["name"] == baseline or (m["group"] == baseline and m["seed"] is not None)]
    if not bases:
        raise FusevalError(f"baseline {baseline!r} is not in run {run['id']} (models: {', '.join(names)})")
    bench, judge = _gate_target(config, bench, judge)
    df = run_scores(store, config)
    df = df[(df["bench"] == bench) & (df["judge"] == judge)]
    gates = []
    for m in config["models"]:
        if m["role"] == "baseline" or m in bases:
            continue
        for base in (b["name"] for b in bases if same_seed(m["seed"], b["seed"])):
            both = paired_rows(df, judge, m["name"], base).dropna(subset=["score", "score_base"])
            if both.empty:
                raise FusevalError(f"{m['name']} and {base} share no judged questions on {bench}")
            q = both["question_id"].map(repr).to_numpy()
            outcome, e = stats.gate_difference(both["score"].to_numpy(float), both["score_base"].to_numpy(float), q,
                                               margin, level=level, n_boot=n_boot)
            sentence = gate_sentence(outcome, e, margin, base, m["name"],
                                     questions_needed=stats.questions_to_decide(e, margin))
            gates.append(Gate(m["name"], base, bench, judge, outcome.value, e.mean, e.low, e.high, margin, level,
                              sentence))
    return gates


def same_seed(a: int | None, b: int | None) -> bool:
    """Whether two models may be compared: a model without a training seed meets every seed, else seeds match."""
    return a is None or b is None or a == b


def _merge_weights(models: list[dict]) -> dict:
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


def _examples(store: Store, config: dict, n: int, scores: pd.DataFrame) -> list[Example]:
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
            per = {name: [_f(x) for x in sc[(sc["model"] == name) & (sc["sample"] == 0)].sort_values("turn")["score"]]
                   for name in answers}
            out.append(Example(bench["name"], qid, cat, turns, {k: v.get(qid, []) for k, v in answers.items()}, per))
            if len(out) >= n:
                break
    return out


def _served_by(store: Store, config: dict, model_hash: str) -> str:
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


def report_data(store: Store, run_id: str, n_boot: int = 10_000) -> ReportData:
    """Everything the report of one run shows, computed from the store."""
    run = store.run(run_id)
    config = run["config"]
    if "models" not in config:
        raise FusevalError(f"run {run['id']} did not finish its work (status {run['status']}); run the suite again")
    suite = config["suite"]
    df = run_scores(store, config)
    baselines = [m["name"] for m in config["models"] if m["role"] == "baseline"]
    scores = _per_bench(df, score_table, n_boot=n_boot) if len(df) else pd.DataFrame()
    diffs = (pd.concat([_per_bench(df, difference_table, baseline=b, n_boot=n_boot) for b in baselines],
                       ignore_index=True) if len(df) and baselines else pd.DataFrame())
    if len(diffs):
        roles = {m["name"]: m["role"] for m in config["models"]}
        seed = {m["name"]: m["seed"] for m in config["models"]}
        # a trained baseline (the control) is compared with the candidate of the same training seed only
        paired = np.array([same_seed(seed.get(m), seed.get(b)) for m, b in zip(diffs["model"], diffs["baseline"])],
                          dtype=bool)
        diffs = diffs[(diffs["model"].map(roles) != "baseline") & paired].reset_index(drop=True)
    gates = []
    if suite.get("gate"):
        g = suite["gate"]
        gates = gate_run(store, run, g["baseline"], g["margin"], g["level"], g.get("bench"), g.get("judge"), n_boot)
    overall = diffs[diffs["category"] == OVERALL] if len(diffs) else diffs
    seeds = _seed_rows(config, overall)
    ablations = {}
    ref = suite["gate"]["baseline"] if suite.get("gate") else (baselines[0] if baselines else None)
    models = config["models"]
    for grid, members in config.get("grids", {}).items():  # members: the grid's names (groups) -> axis values
        grid_seeds = sorted({m["seed"] for m in models if m["group"] in members}, key=lambda x: (x is not None, x))
        for seed in grid_seeds:  # one grid per training seed: a cell holds one model
            names = {m["name"]: members[m["group"]] for m in models if m["group"] in members and m["seed"] == seed}
            refs = {m["name"] for m in models if m["group"] == ref and m["seed"] in (None, seed)}
            part = overall[overall["model"].isin(names) & overall["baseline"].isin(refs)] if len(overall) else overall
            if len(part):
                axes = pd.DataFrame([names[m] for m in part["model"]], index=part.index)
                key = grid if len(grid_seeds) == 1 else f"{grid} · seed {seed}"
                ablations[key] = pd.concat([axes, part[["model", "bench", "judge", "baseline", "diff", "low",
                                                        "high"]]], axis=1)
    names = {m["name"] for m in config["models"]}
    history = store.history(suite["name"])
    history = history[history["model"].isin(names)][["run_id", "started", "model", "bench", "judge", "mean", "low",
                                                      "high"]]
    metrics = _metrics(store, config)
    notes = {}
    if suite.get("judge", {}).get("note"):
        for b in config["benches"]:
            for j in b.get("judge_ids", []):
                if j.startswith("llm/"):
                    notes[j] = suite["judge"]["note"]
    return ReportData(
        title=f"{suite['name']}: run {run['id']}",
        run={"id": run["id"], "suite": suite["name"], "suite_file": config.get("suite_file"),
             "started": run["started"], "ended": run["ended"], "git_sha": run["git_sha"],
             "backend": config["backend"], "workspace": config.get("workspace"), "counts": config.get("counts", {})},
        scores=scores, diffs=diffs, gates=gates, seeds=seeds, ablations=ablations, history=history,
        merge_weights=_merge_weights(config["models"]), metrics=metrics,
        examples=_examples(store, config, suite.get("examples", 3), df), judge_notes=notes,
        models={m["name"]: {"role": m["role"], "path": m["path"], "kind": m["kind"], "seed": m["seed"],
                            "group": m["group"], "recipe": (config.get("recipes") or {}).get(m["name"]),
                            "built": recipe_summary(m["kind"], (config.get("recipes") or {}).get(m["name"])),
                            "served": _served_by(store, config, m["hash"])}
                for m in config["models"]})


def _seed_rows(config: dict, overall: pd.DataFrame) -> pd.DataFrame:
    groups: dict[str, list[dict]] = {}
    for m in config["models"]:
        if m["seed"] is not None:
            groups.setdefault(m["group"], []).append(m)
    group_of = {m["name"]: m["group"] for m in config["models"]}
    rows = []
    for group, members in groups.items():
        if len(members) < 2 or overall.empty:
            continue
        for m in members:
            for r in overall[overall["model"] == m["name"]].itertuples():
                # a seeded baseline (control@s1) is named by its group: each seed is compared with its own
                rows.append({"group": group, "seed": m["seed"], "model": m["name"], "bench": r.bench,
                             "judge": r.judge, "baseline": group_of.get(r.baseline, r.baseline), "diff": r.diff,
                             "low": r.low, "high": r.high})
    return pd.DataFrame(rows, columns=SEED_COLUMNS)


def _metrics(store: Store, config: dict) -> pd.DataFrame:
    """lm-eval metrics of this run's models (tasks and their subtasks), at the run's task settings."""
    rows = []
    for b in config["benches"]:
        if not b.get("lmeval"):
            continue
        for m in config["models"]:
            for task, metric, value, stderr in store.db.execute(
                    "SELECT task, metric, value, stderr FROM metrics WHERE model_hash=? AND task LIKE ? ORDER BY task",
                    (m["hash"], f"%@{b['lmeval_key']}")):
                if metric != "none":
                    rows.append({"model": m["name"], "task": task.rsplit("@", 1)[0], "metric": metric,
                                 "value": value, "stderr": stderr})
    return pd.DataFrame(rows, columns=["model", "task", "metric", "value", "stderr"])
