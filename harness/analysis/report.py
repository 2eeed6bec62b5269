"""One run's report data, out of the store: the decision first, then scores, differences, seeds, ablations,
lm-eval metrics, history, examples and how it was all computed.

    data = report_data(store, "latest")          # a reports.ReportData, every number with its interval
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy.stats import chi2

from fusion.common.errors import FusevalError
from harness.analysis import details, stats
from harness.analysis.noise import aa_noise, noise_table
from harness.analysis.recipes import decide, groups, paired_seed_rows, recipe_estimate
from harness.analysis.results import _gate_target, _per_bench, gate_run, run_scores, same_seed
from harness.analysis.summary import ALL, difference_table, score_table
from harness.store import Store
from reports.data import METRIC_COLUMNS, SEED_COLUMNS, SEED_SUMMARY_COLUMNS, Decision, ReportData

Z95 = 1.959963984540054  # lm-eval metrics: value ± z·stderr (a normal interval from lm-eval's own stderr)


def ungraded(df: pd.DataFrame, config: dict, notes: dict[str, str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The rows of bench x judge pairs that produced at least one grade, and one line for each that produced none
    (with the judge's note, where the suite gives one)."""
    notes = notes or {}
    lines, keep = [], pd.Series(True, index=df.index)
    for b in (b for b in config["benches"] if not b.get("lmeval")):
        for j in b.get("judge_ids", []):
            mask = (df["bench"] == b["name"]) & (df["judge"] == j)
            if mask.any() and df.loc[mask, "score"].notna().sum() == 0:
                lines.append(f"{b['name']} · judge {j}: no grades — all {int(mask.sum())} judgments were "
                             "missing (no verdict could be read), so this bench has no scores or comparisons."
                             + (f" Judge note: {notes[j]}" if j in notes else ""))
                keep &= ~mask
    return df[keep], lines


def _decision(df: pd.DataFrame, config: dict, gate: dict | None, n_boot: int) -> Decision | None:
    """The decision block's bench and judge: the gate's, else the first bench with grades."""
    benches = [b for b in config["benches"] if not b.get("lmeval")]
    if df.empty or not benches:
        return None
    if gate:
        bench, judge = _gate_target(config, gate.get("bench"), gate.get("judge"))
    else:
        graded = df.dropna(subset=["score"])
        first = next(((b["name"], j) for b in benches for j in b.get("judge_ids", [])
                      if ((graded["bench"] == b["name"]) & (graded["judge"] == j)).any()), None)
        if first is None:
            return None
        bench, judge = first
    return decide(df, config, bench, judge, gate, n_boot)


def _diffs(df: pd.DataFrame, config: dict, n_boot: int) -> pd.DataFrame:
    baselines = [m["name"] for m in config["models"] if m["role"] == "baseline"]
    if df.empty or not baselines:
        return pd.DataFrame()
    diffs = pd.concat([_per_bench(df, difference_table, baseline=b, n_boot=n_boot) for b in baselines],
                      ignore_index=True)
    if diffs.empty:
        return diffs
    roles = {m["name"]: m["role"] for m in config["models"]}
    seed = {m["name"]: m["seed"] for m in config["models"]}
    # a trained baseline (the control) is compared with the candidate of the same training seed only
    paired = np.array([same_seed(seed.get(m), seed.get(b)) for m, b in zip(diffs["model"], diffs["baseline"])],
                      dtype=bool)
    return diffs[(diffs["model"].map(roles) != "baseline") & paired].reset_index(drop=True)


def _ablations(config: dict, overall: pd.DataFrame, ref: str | None) -> dict[str, pd.DataFrame]:
    """One grid per training seed (a cell holds one model), each cell its difference to the reference baseline."""
    ablations = {}
    models = config["models"]
    for grid, members in config.get("grids", {}).items():  # members: the grid's names (groups) -> axis values
        grid_seeds = sorted({m["seed"] for m in models if m["group"] in members}, key=lambda x: (x is not None, x))
        for seed in grid_seeds:
            names = {m["name"]: members[m["group"]] for m in models if m["group"] in members and m["seed"] == seed}
            refs = {m["name"] for m in models if m["group"] == ref and m["seed"] in (None, seed)}
            part = overall[overall["model"].isin(names) & overall["baseline"].isin(refs)] if len(overall) else overall
            if len(part):
                axes = pd.DataFrame([names[m] for m in part["model"]], index=part.index)
                key = grid if len(grid_seeds) == 1 else f"{grid} · seed {seed}"
                ablations[key] = pd.concat([axes, part[["model", "bench", "judge", "baseline", "diff", "low",
                                                        "high"]]], axis=1)
    return ablations


def _sd_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """The between-seed SD of per-seed differences with its chi-square interval ((S−1) df)."""
    n = len(values)
    sd = float(np.std(values, ddof=1))
    a = (1 - level) / 2
    return sd, sd * float(np.sqrt((n - 1) / chi2.ppf(1 - a, n - 1))), sd * float(np.sqrt((n - 1) / chi2.ppf(a, n - 1)))


def seed_summary(df: pd.DataFrame, config: dict, n_boot: int) -> pd.DataFrame:
    """Per recipe with several seeds, bench, judge and baseline recipe: the seeds-combined difference with its
    interval, and the between-seed SD of the per-seed differences with its interval."""
    recipes = groups(config)
    bases = [n for n, ms in recipes.items() if ms[0]["role"] == "baseline"]
    rows = []
    for (bench, judge), part in df.groupby(["bench", "judge"], sort=False):
        for name, models in recipes.items():
            if name in bases or len({m["seed"] for m in models}) < 2:
                continue
            for base in bases:
                e = recipe_estimate(part, judge, models, recipes[base], 0.95, n_boot)
                if e is None or e.n_seeds < 2:
                    continue
                d, _, _ = stats.cells(*paired_seed_rows(part, judge, models, recipes[base]))
                sd, sd_low, sd_high = _sd_interval(d.mean(1))
                rows.append({"group": name, "bench": bench, "judge": judge, "baseline": base, "seeds": e.n_seeds,
                             "diff": e.mean, "low": e.low, "high": e.high, "sd": sd, "sd_low": sd_low,
                             "sd_high": sd_high})
    return pd.DataFrame(rows, columns=SEED_SUMMARY_COLUMNS)


def _notes(suite: dict, config: dict) -> dict[str, str]:
    note = suite.get("judge", {}).get("note")
    return {j: note for b in config["benches"] for j in b.get("judge_ids", []) if note and j.startswith("llm/")}


def report_data(store: Store, run_id: str, n_boot: int = 10_000) -> ReportData:
    """Everything the report of one run shows, computed from the store."""
    run = store.run(run_id)
    config = run["config"]
    if "models" not in config:
        raise FusevalError(f"run {run['id']} did not finish its work (status {run['status']}); run the suite again")
    suite = config["suite"]
    gate = suite.get("gate")
    notes = _notes(suite, config)
    df, empty = ungraded(run_scores(store, config), config, notes)
    scores = _per_bench(df, score_table, n_boot=n_boot) if len(df) else pd.DataFrame()
    diffs = _diffs(df, config, n_boot)
    gates = (gate_run(store, run, gate["baseline"], gate["margin"], gate["level"], gate.get("bench"),
                      gate.get("judge"), n_boot) if gate else [])
    overall = diffs[diffs["category"] == ALL] if len(diffs) else diffs
    baselines = [m["name"] for m in config["models"] if m["role"] == "baseline"]
    names = {m["name"] for m in config["models"]}
    history = store.history(suite["name"])
    history = history[history["model"].isin(names)][["run_id", "started", "model", "bench", "judge", "mean", "low",
                                                      "high"]]
    recipes = config.get("recipes") or {}
    return ReportData(
        title=f"{suite['name']}: run {run['id']}",
        run={"id": run["id"], "suite": suite["name"], "suite_file": config.get("suite_file"),
             "started": run["started"], "ended": run["ended"], "git_sha": run["git_sha"],
             "backend": config["backend"], "workspace": config.get("workspace"), "counts": config.get("counts", {})},
        scores=scores, diffs=diffs, gates=gates, seeds=_seed_rows(config, overall),
        seed_summary=seed_summary(df, config, n_boot),
        ablations=_ablations(config, overall, gate["baseline"] if gate else (baselines[0] if baselines else None)),
        history=history, merge_weights=details.merge_weights(config["models"]), metrics=_metrics(store, config),
        examples=details.examples(store, config, suite.get("examples", 3), df), judge_notes=notes,
        models={m["name"]: {"role": m["role"], "path": m["path"], "kind": m["kind"], "seed": m["seed"],
                            "group": m["group"], "recipe": recipes.get(m["name"]),
                            "built": details.recipe_summary(m["kind"], recipes.get(m["name"])),
                            "served": details.served_by(store, config, m["hash"])}
                for m in config["models"]},
        decision=_decision(df, config, gate, n_boot),
        method=details.method_facts(store, run, n_boot, 0.95, gate), empty_benches=empty,
        noise=_noise(store, df, suite["name"]))


def _noise(store: Store, df: pd.DataFrame, suite: str) -> pd.DataFrame:
    """The run's own noise split where it has samples or judge repeats, else its suite's latest A/A check's."""
    own = noise_table(df)
    return own if len(own) else aa_noise(store, suite)


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
    """lm-eval metrics of this run's models (tasks and their subtasks), at the run's task settings, each with
    its 95% interval: a bootstrap over documents where lm-eval logged its samples, else value ± z·stderr."""
    rows = []
    for b in config["benches"]:
        if not b.get("lmeval"):
            continue
        for m in config["models"]:
            for task, metric, value, stderr, detail in store.db.execute(
                    "SELECT task, metric, value, stderr, detail FROM metrics WHERE model_hash=? AND task LIKE ? "
                    "ORDER BY task", (m["hash"], f"%@{b['lmeval_key']}")):
                if metric == "none":
                    continue
                extra = json.loads(detail or "{}")
                if extra.get("low") is not None:
                    low, high, how = extra["low"], extra["high"], extra.get("interval", "bootstrap")
                elif stderr is not None:
                    low, high, how = value - Z95 * stderr, value + Z95 * stderr, "value ± 1.96 × lm-eval's stderr"
                else:
                    low = high = how = None
                rows.append({"model": m["name"], "task": task.rsplit("@", 1)[0], "metric": metric, "value": value,
                             "stderr": stderr, "low": low, "high": high, "interval": how})
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)
