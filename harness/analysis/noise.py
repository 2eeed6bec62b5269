"""Where a score's noise comes from, per model: questions, sampled answers, judge repeats; and which knob pays.

    rows = noise_table(df)      # one row per bench x judge x model whose run has samples or judge repeats
    rows = aa_noise(store, "demo")   # else: from the suite's latest A/A check (one model, many sampled answers)

With `generation.samples: K` answers per question and `judge.repeats: J` judgments per answer, the
variance of a model's mean score splits into a question part (only more questions shrink it), a
generation part (shrunk by K) and a judge part (shrunk by K·J): Var(mean) ≈ (ω² + σ²_gen/K +
σ²_judge/(K·J))/C (`stats.variance_components`, turns averaged first). Each part gets a 95% interval
from a cluster bootstrap over questions, and the table says what the interval's half-width would be
with twice the questions, samples or judge repeats.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.analysis import stats
from reports.data import NOISE_COLUMNS

Z95 = 1.959963984540054
PARTS = ("omega2", "sigma2_gen", "sigma2_judge")


def _cells(part: pd.DataFrame) -> pd.DataFrame:
    """One row per (question, sample, repeat): the mean over turns of its score."""
    cells = part.assign(question=part["question_id"].map(repr))
    return cells.groupby(["question", "sample", "repeat"], as_index=False)["score"].mean()


def _components(cells: pd.DataFrame) -> stats.VarianceComponents:
    return stats.variance_components(cells["score"].to_numpy(float), cells["question"].to_numpy(),
                                     cells["sample"].to_numpy(), cells["repeat"].to_numpy())


def _intervals(cells: pd.DataFrame, n_boot: int, seed: int) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of each part: questions redrawn with replacement, each copy its own question."""
    codes, qs = pd.factorize(cells["question"])
    rows_of = [np.flatnonzero(codes == i) for i in range(len(qs))]
    score, sample, repeat = (cells[c].to_numpy() for c in ("score", "sample", "repeat"))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {p: [] for p in PARTS}
    for w in rng.multinomial(len(qs), np.full(len(qs), 1.0 / len(qs)), size=n_boot):
        picked = np.repeat(np.arange(len(qs)), w)
        idx = np.concatenate([rows_of[q] for q in picked])
        label = np.repeat(np.arange(len(picked)), [len(rows_of[q]) for q in picked])
        vc = stats.variance_components(score[idx].astype(float), label, sample[idx], repeat[idx])
        for p in PARTS:
            draws[p].append(getattr(vc, p))
    return {p: (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) for p, v in draws.items()}


def noise_table(df: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per bench, judge and model with more than one sample or judge repeat: the parts, their intervals, and
    the interval half-width now and with each knob doubled."""
    rows = []
    graded = df.dropna(subset=["score"])
    for (bench, judge, model), part in graded.groupby(["bench", "judge", "model"], sort=False):
        if part["sample"].nunique() < 2 and part["repeat"].nunique() < 2:
            continue
        cells = _cells(part)
        if cells["question"].nunique() < 3:
            continue
        vc = _components(cells)
        ci = _intervals(cells, n_boot, seed)
        half = {k: Z95 * math.sqrt(vc.var_mean_at(**kw)) for k, kw in
                (("now", {}), ("questions", {"questions": 2 * vc.C}), ("samples", {"samples": 2 * vc.K}),
                 ("repeats", {"repeats": 2 * vc.J}))}
        rows.append({"bench": bench, "judge": judge, "model": model, "questions": vc.C, "samples": vc.K,
                     "repeats": vc.J, **{p: getattr(vc, p) for p in PARTS},
                     **{f"{p}_low": ci[p][0] for p in PARTS}, **{f"{p}_high": ci[p][1] for p in PARTS},
                     **{f"half_{k}": v for k, v in half.items()}})
    return pd.DataFrame(rows, columns=NOISE_COLUMNS)


def aa_noise(store, suite: str, n_boot: int = 200) -> pd.DataFrame:
    """The noise split of the suite's latest A/A check: its model answered the bench 2 x pairs times under other
    sampling seeds, each answer set a sample. Empty without a check (or one recorded before its answer keys)."""
    run_id = store.latest_run(f"{suite}/aa")
    r = store.run(run_id)["config"] if run_id else {}
    if not r.get("gen_keys"):
        return pd.DataFrame(columns=NOISE_COLUMNS)
    df = store.scores(bench=r["bench"], judge=r["judge"])
    df = df[(df["model_hash"] == r["model_hash"]) & df["gen_key"].isin(r["gen_keys"])]
    sample = {k: i for i, k in enumerate(r["gen_keys"])}
    label = f"{r['model']} (A/A check, temperature {r['temperature']:g})"
    return noise_table(df.assign(sample=df["gen_key"].map(sample), model=label), n_boot=n_boot)
