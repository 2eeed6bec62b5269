"""The report's sections below the decision, each as plain text and figures for the templates.

Every number arrives computed (reports/data.py); here it is worded (reports/fmt.py) and laid out.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports import figures
from reports.data import ALL, ReportData
from reports.fmt import fmt_count, fmt_interval, fmt_level, fmt_number, fmt_time
from reports.tables import EMPTY, Figures, category_order, groups, in_model_order, overview, table, text

MDE_EXPLAINED = ("The minimum detectable effect (MDE) is the smallest true difference the comparison would "
                 "detect 80% of the time at the 95% level, from the observed spread of paired differences "
                 "((z₀.₉₇₅ + z₀.₈)·sd/√questions); a true difference smaller than it can hide inside the "
                 "interval, so an interval that covers 0 does not show that two models are equal.")
SEEDS_EXPLAINED = ("Each seed's interval covers question and judge noise only; the seeds-combined interval and the "
                   "between-seed standard deviation add the uncertainty that comes from training itself.")
LMEVAL_EXPLAINED = ("lm-eval scores multiple-choice log-likelihoods (which of the listed answers the model finds most "
                    "likely), not the answers it generates, so it can rank models differently from the judged "
                    "benches above.")
INVALID_TEXT = "\\ufffd"  # what U+FFFD (an undecodable byte sequence) is shown as: visible, not silent



def _scores(data: ReportData, figs: Figures) -> dict[str, Any]:
    level, blocks = fmt_level(data.level), []
    for (bench, judge), part in groups(data.scores, ["bench", "judge"]):
        part = category_order(part)
        title = f"{bench} · judge {judge}"
        part = in_model_order(data, part)
        rows = [[r.model, r.category, fmt_number(r.mean), fmt_interval(r.low, r.high), fmt_number(r.se),
                 fmt_count(r.questions), fmt_count(r.missing)] for r in part.itertuples()]
        blocks.append({"title": title, "note": data.judge_notes.get(str(judge)),
                       "overview": overview(part, "mean", level),
                       "table": table(["model", "category", "mean", f"{level} interval", "SE", "questions",
                                        "missing"], rows),
                       "figure": figs.add(f"scores {bench} {judge}", figures.scores_figure(part, styles=_styles(data)),
                                          f"Scores per category, {title} (bars: {level} intervals).")})
    return {"blocks": blocks, "empty": None if blocks else EMPTY["scores"]}


def _styles(data: ReportData) -> dict[str, tuple[str, str]]:
    """One colour per recipe (its seeds told apart by marker), the same in every figure."""
    return figures.model_styles(data.models)


def _gate_margin(data: ReportData) -> float | None:
    return data.gates[0].margin if data.gates else None


def _margin(data: ReportData, bench: str, judge: str) -> tuple[float, float] | None:
    """(margin, level) of the suite's gate where it decides on this bench and judge."""
    g = next((g for g in data.gates if (g.bench, g.judge) == (bench, judge)), None)
    return (g.margin, g.level) if g else None


def _diffs(data: ReportData, figs: Figures) -> dict[str, Any]:
    level, blocks = fmt_level(data.level), []
    for (bench, judge, baseline), part in groups(data.diffs, ["bench", "judge", "baseline"]):
        part = in_model_order(data, category_order(part))
        title = f"{bench} · judge {judge} · vs {baseline}"
        gate = _margin(data, bench, judge)
        caption = f"Paired differences to {baseline}, {title} (bars: {level} intervals)"
        if gate is not None:
            caption += (f"; shaded: the gate's margin ±{fmt_number(gate[0])} (the gate decides per recipe, on the "
                        f"{fmt_level(gate[1])} interval over seeds and questions)")
        rows = [[r.model, r.category, fmt_number(r.diff, signed=True), fmt_interval(r.low, r.high, signed=True),
                 fmt_number(r.se), fmt_number(r.mde), fmt_count(r.questions), fmt_count(r.missing)]
                for r in part.itertuples()]
        png = figures.forest_figure(part, margin=gate[0] if gate else None, title=title, styles=_styles(data))
        blocks.append({"title": title, "overview": overview(part, "diff", level, signed=True, last=("MDE", "mde")),
                       "table": table(["candidate", "category", "difference", f"{level} interval", "SE", "MDE",
                                        "questions", "missing"], rows),
                       "figure": figs.add(f"forest {bench} {judge} {baseline}", png, caption + ".")})
    return {"blocks": blocks, "explained": MDE_EXPLAINED, "empty": None if blocks else EMPTY["diffs"]}


def _seed_summary(data: ReportData, bench: str, judge: str, baseline_group: str) -> dict[str, Any] | None:
    part = data.seed_summary
    part = part[(part["bench"] == bench) & (part["judge"] == judge) & (part["baseline"] == baseline_group)]
    if part.empty:
        return None
    rows = [[r.group, r.seeds, f"{fmt_number(r.diff, signed=True)} ({fmt_interval(r.low, r.high, signed=True)})",
             f"{fmt_number(r.sd)} ({fmt_interval(r.sd_low, r.sd_high)})"] for r in part.itertuples()]
    return table(["recipe", "seeds", "difference, seeds combined (95% interval)", "between-seed SD (95% interval)"],
                 rows)


def _seeds(data: ReportData, figs: Figures) -> dict[str, Any]:
    level, blocks = fmt_level(data.level), []
    groups_of = {m: info.get("group", m) for m, info in data.models.items()}
    for (bench, judge, baseline), part in groups(data.seeds, ["bench", "judge", "baseline"]):
        title = f"{bench} · judge {judge} · vs {baseline}"
        rows = []
        for (group,), g in groups(part, ["group"]):
            g = g.sort_values("seed", kind="stable")
            rows += [[group, r.seed, r.model, fmt_number(r.diff, signed=True),
                      fmt_interval(r.low, r.high, signed=True)] for r in g.itertuples()]
        blocks.append({"title": title,
                       "summary": _seed_summary(data, bench, judge, groups_of.get(baseline, baseline)),
                       "table": table(["recipe", "seed", "model", "difference", f"{level} interval"], rows),
                       "figure": figs.add(f"seeds {bench} {judge} {baseline}",
                                          figures.seed_figure(part, title=f"Per training seed · {title}",
                                                             margin=_gate_margin(data)),
                                          f"Differences per training seed, {title} (bars: {level} intervals "
                                          "over questions; shade: range across seeds).")})
    return {"blocks": blocks, "explained": SEEDS_EXPLAINED, "empty": None if blocks else EMPTY["seeds"]}


NOISE_EMPTY = ("one answer per question, judged once: set generation.samples and judge.repeats above 1 to split "
               "the noise into question, generation and judge parts")
KNOBS = {"questions": "twice the questions", "samples": "twice the samples per question",
         "repeats": "twice the judge repeats"}


def _part(r, p: str) -> str:
    return f"{fmt_number(getattr(r, p), 3)} ({fmt_interval(getattr(r, p + '_low'), getattr(r, p + '_high'), 3)})"


def _noise(data: ReportData) -> dict[str, Any]:
    """Per bench and judge: each model's variance parts with intervals, and what each knob would buy."""
    blocks = []
    for (bench, judge), part in groups(data.noise, ["bench", "judge"]):
        rows, best = [], []
        for r in part.itertuples():
            halves = {k: getattr(r, f"half_{k}") for k in KNOBS}
            knob = min(halves, key=halves.get)
            best.append(f"{r.model}: {KNOBS[knob]} (±{fmt_number(r.half_now)} → ±{fmt_number(halves[knob])})")
            rows.append([r.model, f"{fmt_count(r.questions)} × {r.samples:g} × {r.repeats:g}", _part(r, "omega2"),
                         _part(r, "sigma2_gen"), _part(r, "sigma2_judge"), f"±{fmt_number(r.half_now)}",
                         *[f"±{fmt_number(v)}" for v in halves.values()]])
        cols = ["model", "questions × samples × repeats", "question ω² (95% interval)",
                "generation σ² (95% interval)", "judge σ² (95% interval)", "95% half-width now",
                *[f"with {v}" for v in KNOBS.values()]]
        blocks.append({"title": f"{bench} · judge {judge}", "table": table(cols, rows),
                       "best": "What shrinks the interval most: " + "; ".join(best) + "."})
    return {"blocks": blocks, "empty": None if blocks else NOISE_EMPTY}


def _ablations(data: ReportData, figs: Figures) -> dict[str, Any]:
    level, blocks = fmt_level(data.level), []
    for name, grid in data.ablations.items():
        keys = [k for k in ("bench", "judge", "baseline") if k in grid.columns]
        for key, part in (groups(grid, keys) if keys else [((), grid)]):
            axes = figures.grid_axes(part)
            prefix = {"bench": "", "judge": "judge ", "baseline": "vs "}
            title = " · ".join([str(name)] + [f"{prefix[c]}{v}" for c, v in zip(keys, key)])
            rows = [[*(r[a] for a in axes), r["model"], fmt_number(r["diff"], signed=True),
                     fmt_interval(r["low"], r["high"], signed=True)] for _, r in part.iterrows()]
            blocks.append({"title": title,
                           "table": table([*axes, "model", "difference", f"{level} interval"], rows),
                           "figure": figs.add(f"ablation {title}",
                                              figures.ablation_figure(part, title, styles=_styles(data),
                                                                      margin=_gate_margin(data)),
                                              f"Ablation grid {title}: difference to the baseline and the width "
                                              f"of its {level} interval.")})
    return {"blocks": blocks, "empty": None if blocks else EMPTY["ablations"]}


def _metrics(data: ReportData) -> dict[str, Any]:
    """A compact table (task groups and stand-alone tasks, one column per metric) and every row, folded."""
    m = data.metrics
    if m.empty:
        return {"compact": None, "table": None, "empty": EMPTY["metrics"]}
    tasks = set(m["task"])
    top = m[[not any(t != task and task.startswith(t + "_") for t in tasks) for task in m["task"]]]
    metrics = list(dict.fromkeys(top["metric"]))

    def cell(r) -> str:  # lm-eval leaves stderr empty for some metrics: then the value alone
        if r is None:
            return ""
        lo = fmt_interval(getattr(r, "low", None), getattr(r, "high", None))
        return fmt_number(r.value) + ("" if lo == "n/a" else f" ({lo})")

    cells = {(r.model, r.task, r.metric): r for r in top.itertuples()}
    compact = [[model, task, *[cell(cells.get((model, task, k))) for k in metrics]]
               for model, task in dict.fromkeys(zip(top["model"], top["task"]))]
    rows = [[r.model, r.task, r.metric, cell(r), fmt_number(r.stderr), getattr(r, "interval", None) or "n/a"]
            for r in m.itertuples()]
    hows = sorted({str(h) for h in m.get("interval", pd.Series(dtype=object)).dropna()})
    explained = LMEVAL_EXPLAINED + (f" Intervals: {'; '.join(hows)}." if hows else "")
    return {"compact": table(["model", "task", *[f"{k} (95% interval)" for k in metrics]], compact),
            "table": table(["model", "task", "metric", "value (95% interval)", "stderr", "interval from"], rows),
            "explained": explained, "empty": None}


def _trends(data: ReportData, figs: Figures) -> dict[str, Any]:
    blocks = []
    for (bench, judge), part in groups(data.history, ["bench", "judge"]):
        title = f"{bench} · judge {judge}"
        ref = figs.add(f"trend {bench} {judge}", figures.trend_figure(part, styles=_styles(data)),
                       f"Nightly trend, {title} (band: interval).")
        if ref:
            started = pd.to_numeric(part["started"], errors="coerce")
            blocks.append({"title": title, "figure": ref,
                           "runs": f"{part['run_id'].nunique()} runs from {fmt_time(started.min())} "
                                   f"to {fmt_time(started.max())}."})
    return {"blocks": blocks, "empty": None if blocks else EMPTY["trends"]}


def _merge(data: ReportData, figs: Figures) -> dict[str, Any]:
    blocks = []
    for model, entry in data.merge_weights.items():
        ref = figs.add(f"merge weights {model}", figures.merge_weights_figure(model, entry),
                       f"{model}: weight of each input per layer and matrix.")
        if ref:
            blocks.append({"model": model, "inputs": ", ".join(map(str, entry.get("inputs") or [])),
                           "tensors": len(entry.get("weights") or {}), "figure": ref})
    return {"blocks": blocks, "empty": None if blocks else EMPTY["merge"]}


def _missing(data: ReportData) -> str:
    overall = data.scores[data.scores["category"] == ALL] if not data.scores.empty else data.scores
    present = int(pd.to_numeric(overall.get("rows"), errors="coerce").fillna(0).sum()) if len(overall) else 0
    missing = int(pd.to_numeric(overall.get("missing"), errors="coerce").fillna(0).sum()) if len(overall) else 0
    total = present + missing
    if total == 0:
        return EMPTY["missing"]
    if missing == 0:
        return f"None of the {total} judgments is missing."
    was = "was" if missing == 1 else "were"
    return (f"{missing} of {total} judgments {was} missing (no verdict could be read); they are left out of the "
            "scores, not counted as 0.")


def _visible(answer: str) -> tuple[str, int]:
    """Model text with each U+FFFD (bytes that were not valid UTF-8 when the answer was decoded) shown as the
    visible escape \\ufffd; and how many there were."""
    return answer.replace("\ufffd", INVALID_TEXT), answer.count("\ufffd")


def _examples(data: ReportData) -> dict[str, Any]:
    out, invalid = [], 0
    for ex in data.examples:
        models = list(ex.answers)
        n = max([len(ex.turns)] + [len(a) for a in ex.answers.values()])
        rows = []
        for i in range(n):
            cells = []
            for m in models:
                answers, scores = ex.answers.get(m, []), ex.scores.get(m, [])
                score = scores[i] if i < len(scores) else None
                shown, bad = _visible(answers[i]) if i < len(answers) else ("(no answer)", 0)
                invalid += bad
                cells.append({"text": shown, "score": None if score is None else fmt_number(score)})
            rows.append({"turn": i + 1, "question": ex.turns[i] if i < len(ex.turns) else "", "cells": cells})
        out.append({"title": f"{ex.bench} · question {ex.question_id} · {ex.category}", "models": models,
                    "rows": rows})
    note = (f"{invalid} place{'s' * (invalid != 1)} in these answers held bytes that were not valid UTF-8 when the "
            f"model's tokens were decoded; each is shown as {INVALID_TEXT}." if invalid else None)
    return {"entries": out, "invalid": note, "empty": None if out else EMPTY["examples"]}


def method_section(data: ReportData) -> dict[str, Any]:
    """How these numbers were computed: the run's facts (clusters, resamples, levels, seeds, judges, ...)."""
    return {"facts": data.method}


def run_facts(data: ReportData) -> dict[str, Any]:
    run = dict(data.run)
    labels = {"id": "run id", "suite": "suite", "backend": "backend", "started": "started", "ended": "ended",
              "git_sha": "git sha", "workspace": "workspace"}
    facts = [(labels[k], fmt_time(run.pop(k)) if k in ("started", "ended") else text(run.pop(k)))
             for k in labels if k in data.run]
    facts += [(str(k), text(v)) for k, v in run.items()]
    names = list(data.models) or list(dict.fromkeys(data.scores.get("model", pd.Series(dtype=object))))
    models = table(["model", "role", "seed", "built from", "answers served by", "path"],
                    [[m] + [text(data.models.get(m, {}).get(k)) for k in ("role", "seed", "built", "served", "path")]
                     for m in names])
    return {"facts": facts, "models": models if names else None}


