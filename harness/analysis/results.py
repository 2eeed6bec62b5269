"""A recorded run's numbers, out of the store: its scores, its history, its gates.

    gates = gate_run(store, store.run("latest"), baseline="control", margin=0.05)   # per recipe, seeds combined
    df = run_scores(store, run["config"])                                          # one row per judged turn

Everything is computed from the store and the run's config (which names its models by content
hash, its benches, question ids, generation key and judges), so a report or a gate can be redone
at any time without serving anything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusion.common.errors import FusevalError
from harness.analysis import stats
from harness.analysis.recipes import recipe_gates
from harness.analysis.summary import ALL, paired_rows, score_table
from harness.analysis.wording import gate_sentence
from harness.store import Store
from reports.data import Gate

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
             "mean": finite_or_none(r.mean), "low": finite_or_none(r.low), "high": finite_or_none(r.high),
             "questions": int(r.questions)}
            for r in table.itertuples()]
    store.add_results(run_id, config["suite"]["name"], rows)


def finite_or_none(x) -> float | None:
    """A float, or None for a missing or NaN value (what JSON and the report show as missing)."""
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
             judge: str | None = None, n_boot: int = 10_000, per_seed: bool = False) -> list[Gate]:
    """Each candidate recipe (its seeds combined) against the `baseline` recipe on one bench and judge: the
    four-way outcome. `per_seed`: each candidate model against its own seed's baseline instead."""
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
    if not per_seed:
        return recipe_gates(df, config, baseline, margin, level, bench, judge, n_boot)
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
