"""Recipes, not models: a candidate trained with several seeds is one recipe, judged with its seeds combined.

    gates = recipe_gates(df, config, baseline="control", margin=0.05, level=0.90, bench="zoo", judge=judge)
    decision = decide(df, config, gate={"baseline": "control", "margin": 0.05, "level": 0.90})

A recipe is a model `group` of the run (fused-varm@s0 and fused-varm@s1 are the recipe fused-varm).
Against a baseline recipe, seed s of the candidate meets seed s of a trained baseline (the control)
and every seed meets an untrained one (the pivot); the paired differences of all seeds and questions
give one interval that carries both the between-seed and the question noise
(`harness.analysis.stats.seeds`). The gate decides on that interval, per recipe.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusion.common.errors import FusevalError
from harness.analysis import stats
from harness.analysis.summary import paired_rows
from harness.analysis.wording import gate_sentence, recipe_answer, seed_caveat
from reports.data import Decision, Gate, Ranked, Verdict

METHOD = ("Each recipe's seeds are combined: per seed, candidate − baseline on the same questions (a trained "
          "baseline meets the candidate's own seed); the interval is the mean ± t·SE of a two-way "
          "seeds × questions random-effects model (Satterthwaite df), so it carries between-seed and question "
          "noise; one seed: the cluster bootstrap over questions.")


def groups(config: dict) -> dict[str, list[dict]]:
    """Recipe name -> its models (in the run's order)."""
    out: dict[str, list[dict]] = {}
    for m in config["models"]:
        out.setdefault(m["group"], []).append(m)
    return out


def group_of(config: dict, name: str) -> str:
    """The recipe a model or recipe name belongs to; an error naming the run's recipes if none."""
    for m in config["models"]:
        if name in (m["name"], m["group"]):
            return m["group"]
    raise FusevalError(f"{name!r} is neither a model nor a recipe of the run (recipes: {', '.join(groups(config))})")


def _label(cand: dict, base: dict) -> int:
    seed = cand["seed"] if cand["seed"] is not None else base["seed"]
    return -1 if seed is None else int(seed)


def paired_seed_rows(df: pd.DataFrame, judge: str, cands: list[dict], bases: list[dict]) -> tuple | None:
    """(differences, seed labels, question keys) of every candidate seed against its baseline seed; None if none."""
    values, seeds, questions = [], [], []
    for c in cands:
        for b in bases:
            if not (c["seed"] is None or b["seed"] is None or c["seed"] == b["seed"]):
                continue
            both = paired_rows(df, judge, c["name"], b["name"]).dropna(subset=["score", "score_base"])
            values.append(both["score"].to_numpy(float) - both["score_base"].to_numpy(float))
            seeds.append(np.full(len(both), _label(c, b)))
            questions.append(both["question_id"].map(repr).to_numpy())
    if not values or not sum(map(len, values)):
        return None
    return np.concatenate(values), np.concatenate(seeds), np.concatenate(questions)


def score_rows(df: pd.DataFrame, judge: str, models: list[dict]) -> tuple | None:
    """(scores, seed labels, question keys) of a recipe's models on one judge; None if nothing was graded."""
    part = df[(df["judge"] == judge) & df["model"].isin([m["name"] for m in models])].dropna(subset=["score"])
    if part.empty:
        return None
    seed = {m["name"]: -1 if m["seed"] is None else int(m["seed"]) for m in models}
    return part["score"].to_numpy(float), part["model"].map(seed).to_numpy(), part["question_id"].map(repr).to_numpy()


def recipe_estimate(df: pd.DataFrame, judge: str, cands: list[dict], bases: list[dict], level: float,
                    n_boot: int = 10_000) -> stats.SeedEstimate | None:
    """The recipe's difference to the baseline recipe, seeds combined; None where they share no judged row."""
    rows = paired_seed_rows(df, judge, cands, bases)
    if rows is None:
        return None
    try:
        return stats.seed_estimate(*rows, level=level, n_boot=n_boot)
    except ValueError:  # no question judged under every seed
        return None


def recipe_gates(df: pd.DataFrame, config: dict, baseline: str, margin: float, level: float, bench: str,
                 judge: str, n_boot: int = 10_000) -> list[Gate]:
    """Each candidate recipe against the baseline recipe: the four-way outcome on the seeds-and-questions interval."""
    recipes = groups(config)
    base = group_of(config, baseline)
    df = df[(df["bench"] == bench) & (df["judge"] == judge)]
    gates = []
    for name, models in recipes.items():
        if name == base or models[0]["role"] == "baseline":
            continue
        e = recipe_estimate(df, judge, models, recipes[base], level, n_boot)
        if e is None:
            raise FusevalError(f"{name} and {base} share no judged questions on {bench}")
        outcome = stats.gate(e.low, e.high, margin)
        sentence = gate_sentence(outcome, e, margin, base, _seeded(name, e.n_seeds),
                                 questions_needed=stats.questions_to_decide(e, margin))
        if e.seed_dominated:
            sentence += " " + seed_caveat(e)
        gates.append(Gate(name, base, bench, judge, outcome.value, e.mean, e.low, e.high, margin, level, sentence,
                          e.n_seeds))
    return gates


def _seeded(name: str, n_seeds: int) -> str:
    return f"{name} ({n_seeds} seeds)" if n_seeds > 1 else name


def _baselines(recipes: dict[str, list[dict]]) -> list[str]:
    """Baseline recipes, trained ones (the gold-only control) first."""
    bases = [n for n, ms in recipes.items() if ms[0]["role"] == "baseline"]
    return sorted(bases, key=lambda n: recipes[n][0]["seed"] is None)


def decide(df: pd.DataFrame, config: dict, bench: str, judge: str, gate: dict | None,
           n_boot: int = 10_000) -> Decision:
    """The first screen: every candidate recipe against each baseline recipe, a ranking, and the answer."""
    recipes = groups(config)
    df = df[(df["bench"] == bench) & (df["judge"] == judge)]
    level = gate["level"] if gate else 0.95
    margin = gate["margin"] if gate else None
    gate_base = group_of(config, gate["baseline"]) if gate else None
    bases = _baselines(recipes)
    cands = [n for n in recipes if n not in bases]
    verdicts = []
    for name in cands:
        for base in bases:
            e = recipe_estimate(df, judge, recipes[name], recipes[base], level, n_boot)
            if e is None:
                continue
            outcome = stats.gate(e.low, e.high, margin).value if margin is not None else None
            verdicts.append(Verdict(name, base, e.mean, e.low, e.high, level, e.n_seeds, e.n_clusters, outcome,
                                    seed_caveat(e) if e.seed_dominated else None))
    ranking = _ranking(df, judge, {n: recipes[n] for n in cands}, level, n_boot)
    control = next((b for b in bases if recipes[b][0]["seed"] is not None), None)
    fused = any(m.get("kind") == "fuse" for n in cands for m in recipes[n])
    base = None if fused or control else gate_base or next(iter(bases), None)  # no fusion: against the baseline
    return Decision(bench, judge, level, margin, gate_base, bases, verdicts, ranking,
                    recipe_answer(verdicts, control, margin, base), METHOD)


def _ranking(df: pd.DataFrame, judge: str, recipes: dict[str, list[dict]], level: float,
             n_boot: int) -> list[Ranked]:
    rows = {n: r for n, ms in recipes.items() if (r := score_rows(df, judge, ms)) is not None}
    if not rows:
        return []
    try:
        p_best = stats.prob_best(rows, n_boot=min(n_boot, 2000))
    except ValueError:  # the recipes share no question
        p_best = dict.fromkeys(rows, float("nan"))
    out = []
    for name, r in rows.items():
        try:
            e = stats.seed_estimate(*r, level=level, n_boot=n_boot)
        except ValueError:  # no question graded under every seed (or only one question): no score to rank
            continue
        out.append(Ranked(name, e.mean, e.low, e.high, p_best[name], e.n_seeds))
    return sorted(out, key=lambda x: -x.mean)
