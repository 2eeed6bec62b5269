"""The report's first screen: per recipe, seeds combined, the verdicts, a ranking and one answer.

The same block opens the HTML page (`<section id="decision">`), report.md and the CLI's closing
lines (`decision_lines`), at most about twelve lines: the answer, one row per recipe, the gate's
tally, the caveats.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports import figures
from reports.data import ALL, Decision, ReportData, Verdict
from reports.fmt import fmt_estimate, fmt_interval, fmt_level, fmt_number
from reports.tables import Figures, in_model_order, table

OUTCOMES = ("improved", "equivalent", "regressed", "inconclusive")


def _cell(v: Verdict | None) -> str:
    if v is None:
        return "n/a"
    est = f"{fmt_number(v.diff, signed=True)} ({fmt_interval(v.low, v.high, signed=True)})"
    return f"{est} {v.outcome}" if v.outcome else est


def _p(p: float) -> str:
    if not p == p:  # nan: no shared questions
        return "n/a"
    return "<0.01" if 0 < p < 0.005 else ">0.99" if 0.995 < p < 1 else f"{p:.2f}"


def _recipes(d: Decision) -> list[str]:
    ranked = [r.recipe for r in d.ranking]
    return ranked + [v.recipe for v in d.verdicts if v.recipe not in ranked and v.recipe != v.baseline]


def _by(d: Decision) -> dict[tuple[str, str], Verdict]:
    return {(v.recipe, v.baseline): v for v in d.verdicts}


def gate_tally(d: Decision) -> str | None:
    """'Gate vs control (±0.05, 90% intervals): 1 regressed, 4 inconclusive.' or None without a gate."""
    if d.margin is None or d.gate_baseline is None:
        return None
    outcomes = [v.outcome for v in d.verdicts if v.baseline == d.gate_baseline]
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in OUTCOMES if o in outcomes) or "no recipes"
    return (f"Gate vs {d.gate_baseline} (margin ±{fmt_number(d.margin)}, {fmt_level(d.level)} intervals): "
            f"{counts}.")


def caveats(d: Decision) -> list[str]:
    """One line for all verdicts whose few seeds vary more than the question noise."""
    flagged = [f"{v.recipe} vs {v.baseline}" for v in d.verdicts if v.caveat]
    if not flagged:
        return []
    return [f"Few seeds: {', '.join(flagged)} — their seeds differ by more than the question noise, so these "
            f"intervals may cover less than {fmt_level(d.level)}; more seeds would pin them down."]


def _scope(d: Decision) -> str:
    seeds = max((v.seeds for v in d.verdicts), default=1)
    questions = max((v.questions for v in d.verdicts), default=0)
    return f"{d.bench} · judge {d.judge} · {seeds} seed{'s' * (seeds != 1)} × {questions} questions"


def decision_section(data: ReportData) -> dict[str, Any] | None:
    """The decision block's text: the answer, the verdict table, the gate's tally, caveats, the method line."""
    d = data.decision
    if d is None:
        return None
    by = _by(d)
    p_best = {r.recipe: r for r in d.ranking}
    lvl = fmt_level(d.level)
    cols = ["recipe", *[f"vs {b} ({lvl} interval)" for b in d.baselines], f"mean score ({lvl} interval)", "P(best)"]
    rows = []
    for name in _recipes(d):
        r = p_best.get(name)
        score = f"{fmt_number(r.mean)} ({fmt_interval(r.low, r.high)})" if r else "n/a"
        rows.append([name, *[_cell(by.get((name, b))) for b in d.baselines], score, _p(r.p_best) if r else "n/a"])
    return {"scope": _scope(d), "answer": d.answer, "table": table(cols, rows), "gate": gate_tally(d),
            "caveats": caveats(d), "method": d.method}


def decision_lines(data: ReportData) -> list[str]:
    """The decision block as plain lines (the CLI's closing lines); without one, the old per-model headline."""
    d = data.decision
    if d is None:
        return [f"{h['text']}  ({h['label']})" for h in headline(data)]
    by = _by(d)
    lines = [f"Decision — {_scope(d)}, {fmt_level(d.level)} intervals over seeds and questions:", f"  {d.answer}"]
    ranking = {r.recipe: r for r in d.ranking}
    for name in _recipes(d):
        parts = [f"vs {b} {_cell(by.get((name, b)))}" for b in d.baselines]
        r = ranking.get(name)
        best = f" · P(best) {_p(r.p_best)}" if r else ""
        lines.append(f"  {name}: " + " · ".join(parts) + best)
    if tally := gate_tally(d):
        lines.append(tally)
    return lines + caveats(d)


def _recipe_styles(data: ReportData) -> dict[str, tuple[str, str]]:
    """Each recipe drawn in its models' colour (the same colour as in every other figure)."""
    styles = figures.model_styles(data.models)
    return {info.get("group", m): styles[m] for m, info in data.models.items() if m in styles}


def verdict_figures(data: ReportData, figs: Figures) -> list[dict[str, str]]:
    """One forest plot per baseline: each recipe's seeds-combined difference, the margin band, the verdicts."""
    d = data.decision
    if d is None:
        return []
    out = []
    for base in d.baselines:
        vs = [v for v in d.verdicts if v.baseline == base]
        if not vs:
            continue
        part = pd.DataFrame({"model": [v.recipe for v in vs], "diff": [v.diff for v in vs],
                             "low": [v.low for v in vs], "high": [v.high for v in vs], "category": ALL})
        title = f"recipes vs {base} · {d.bench} · judge {d.judge}"
        png = figures.forest_figure(part, margin=d.margin, title=title, styles=_recipe_styles(data),
                                    verdicts={v.recipe: v.outcome for v in vs if v.outcome})
        caption = (f"Each recipe minus {base}, its seeds combined (bars: {fmt_level(d.level)} intervals over seeds "
                   "and questions)" + (f"; shaded: the margin ±{fmt_number(d.margin)}" if d.margin else "") + ".")
        if (ref := figs.add(f"recipes {base}", png, caption)) is not None:
            out.append(ref)
    return out


def headline(data: ReportData) -> list[dict[str, str]]:
    """Without a decision block: the gates' sentences, then every candidate's overall difference from each other
    baseline (rows without an estimate, e.g. all verdicts missing, are left to the tables)."""
    out = [{"label": f"{g.bench} · judge {g.judge}", "text": g.sentence} for g in data.gates]
    overall = data.diffs[data.diffs["category"] == ALL] if not data.diffs.empty else data.diffs
    gated = {(g.bench, g.judge, g.baseline) for g in data.gates}
    for _, r in in_model_order(data, overall).iterrows():
        if (r["bench"], r["judge"], r["baseline"]) in gated or fmt_number(r["diff"]) == "n/a":
            continue
        out.append({"label": f"{r['bench']} · judge {r['judge']}",
                    "text": f"{r['model']} vs {r['baseline']}: "
                            f"{fmt_estimate(r['diff'], r['low'], r['high'], data.level, signed=True)}"})
    return out
