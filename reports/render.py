"""Write one run's report: `figures/*.png`, a self-contained `report.html` and a `report.md` summary.

    from reports.render import render_report
    paths = render_report(data, Path("runs/demo/report"))   # {"html": ..., "md": ..., "figures": ...}

The runner computes every number (reports/data.py); this module only words and lays them out, as
estimates with intervals (DESIGN.md section 3.5). Model text is untrusted: the HTML template is
autoescaped and the Markdown template escapes every value it prints, so an answer containing
`<script>` shows as text. Every file is written to a temporary file beside it and renamed into place.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from fusion.common.files import atomic_write_bytes
from reports import figures
from reports.data import ALL, ReportData
from reports.fmt import fmt_count, fmt_estimate, fmt_interval, fmt_level, fmt_number, fmt_time

FORMATS = ("html", "md")
TEMPLATES = Path(__file__).resolve().parent / "templates"
EMPTY = {
    "scores": "This run has no scores.",
    "diffs": "This run has no comparison against a baseline.",
    "seeds": "This run has no repeats across training seeds.",
    "ablations": "This run has no ablation grid.",
    "metrics": "This run has no lm-eval metrics.",
    "trends": "This run has no nightly history (a trend needs at least two runs).",
    "merge": "This run has no merge weight diagnostics.",
    "missing": "This run has no judgments.",
    "examples": "This run has no example answers.",
}
MDE_EXPLAINED = ("The minimum detectable effect (MDE) is the smallest true difference the comparison would "
                 "detect 80% of the time at the 95% level, from the observed spread of paired differences "
                 "((z₀.₉₇₅ + z₀.₈)·sd/√questions); a true difference smaller than it can hide inside the "
                 "interval, so an interval that covers 0 does not show that two models are equal.")
SEEDS_EXPLAINED = ("Each seed's interval covers question and judge noise only; the between-seed standard deviation "
                   "is the part of the uncertainty that comes from training itself.")


class _Figures:
    """The run's figures by unique file name, with what the templates need to show them."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def add(self, stem: str, png: bytes | None, caption: str) -> dict[str, str] | None:
        if png is None:
            return None
        slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:80] or "figure"
        name, n = f"{slug}.png", 1
        while name in self.files:
            n += 1
            name = f"{slug}-{n}.png"
        self.files[name] = png
        return {"path": f"figures/{name}", "caption": caption,
                "data_uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}


def _groups(df: pd.DataFrame, keys: list[str]) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """Sub-tables by `keys`, in order of first appearance (empty frames yield nothing)."""
    if df.empty:
        return
    for key, part in df.groupby(keys, sort=False, dropna=False):
        yield (key if isinstance(key, tuple) else (key,)), part


def _table(columns: list[str], rows: Iterable[Iterable[Any]]) -> dict[str, Any]:
    return {"columns": columns, "rows": [["" if v is None else str(v) for v in r] for r in rows]}


def _text(value: Any) -> str:
    """A run fact or recipe as one line of text (dicts and lists as compact JSON)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return "" if value is None else str(value)


def _category_order(df: pd.DataFrame) -> pd.DataFrame:
    """The pooled 'all' rows first, then each category by name; models keep their order within each."""
    key = df["category"].map(lambda c: (0, "") if c == ALL else (1, str(c)))
    return df.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k")


def headline(data: ReportData) -> list[dict[str, str]]:
    """The gates' sentences, then every candidate's overall difference from each other baseline (rows without an
    estimate, e.g. all verdicts missing, are left to the tables)."""
    out = [{"label": f"{g.bench} · judge {g.judge}", "text": g.sentence} for g in data.gates]
    overall = data.diffs[data.diffs["category"] == ALL] if not data.diffs.empty else data.diffs
    gated = {(g.bench, g.judge, g.baseline) for g in data.gates}
    for _, r in _in_model_order(data, overall).iterrows():
        if (r["bench"], r["judge"], r["baseline"]) in gated or fmt_number(r["diff"]) == "n/a":
            continue
        out.append({"label": f"{r['bench']} · judge {r['judge']}",
                    "text": f"{r['model']} vs {r['baseline']}: "
                            f"{fmt_estimate(r['diff'], r['low'], r['high'], data.level, signed=True)}"})
    return out


def _run_facts(data: ReportData) -> dict[str, Any]:
    run = dict(data.run)
    labels = {"id": "run id", "suite": "suite", "backend": "backend", "started": "started", "ended": "ended",
              "git_sha": "git sha", "workspace": "workspace"}
    facts = [(labels[k], fmt_time(run.pop(k)) if k in ("started", "ended") else _text(run.pop(k)))
             for k in labels if k in data.run]
    facts += [(str(k), _text(v)) for k, v in run.items()]
    names = list(data.models) or list(dict.fromkeys(data.scores.get("model", pd.Series(dtype=object))))
    models = _table(["model", "role", "seed", "built from", "answers served by", "path"],
                    [[m] + [_text(data.models.get(m, {}).get(k)) for k in ("role", "seed", "built", "served", "path")]
                     for m in names])
    return {"facts": facts, "models": models if names else None}


def _overview(part: pd.DataFrame, value: str, level: str, signed: bool = False,
              last: tuple[str, str] = ("missing", "missing")) -> dict[str, Any]:
    """Models down, categories across: 'estimate (low to high)' per cell, the pooled column first, then the
    pooled row's `last` column (e.g. missing judgments or the MDE)."""
    cats = list(dict.fromkeys(part["category"]))
    cells = {(r["model"], r["category"]): r for _, r in part.iterrows()}
    rows = []
    for model in dict.fromkeys(part["model"]):
        row = [model]
        for c in cats:
            r = cells.get((model, c))
            est = "" if r is None else fmt_number(r[value], signed=signed)
            row.append(f"{est} ({fmt_interval(r['low'], r['high'], signed=signed)})" if est not in ("", "n/a")
                       else est)
        pooled = cells.get((model, ALL))
        col = last[1]
        row.append("" if pooled is None else fmt_count(pooled[col]) if col == "missing" else fmt_number(pooled[col]))
        rows.append(row)
    return _table(["model", *[f"{c} ({level} interval)" if c == ALL else c for c in cats], last[0]], rows)


def _in_model_order(data: ReportData, part: pd.DataFrame) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(data.models)}
    return part.assign(_o=part["model"].map(lambda m: order.get(m, len(order)))).sort_values(
        "_o", kind="stable").drop(columns="_o")


def _scores(data: ReportData, figs: _Figures) -> dict[str, Any]:
    level, blocks = fmt_level(data.level), []
    for (bench, judge), part in _groups(data.scores, ["bench", "judge"]):
        part = _category_order(part)
        title = f"{bench} · judge {judge}"
        part = _in_model_order(data, part)
        rows = [[r.model, r.category, fmt_number(r.mean), fmt_interval(r.low, r.high), fmt_number(r.se),
                 fmt_count(r.questions), fmt_count(r.missing)] for r in part.itertuples()]
        blocks.append({"title": title, "note": data.judge_notes.get(str(judge)),
                       "overview": _overview(part, "mean", level),
                       "table": _table(["model", "category", "mean", f"{level} interval", "SE", "questions",
                                        "missing"], rows),
                       "figure": figs.add(f"scores {bench} {judge}", figures.scores_figure(part),
                                          f"Scores per category, {title} (bars: {level} intervals).")})
    return {"blocks": blocks, "empty": None if blocks else EMPTY["scores"]}


def _gate_for(data: ReportData, bench: str, judge: str, baseline: str):
    return next((g for g in data.gates if (g.bench, g.judge, g.baseline) == (bench, judge, baseline)), None)


def _diffs(data: ReportData, figs: _Figures) -> dict[str, Any]:
    level, blocks = fmt_level(data.level), []
    for (bench, judge, baseline), part in _groups(data.diffs, ["bench", "judge", "baseline"]):
        part = _in_model_order(data, _category_order(part))
        title = f"{bench} · judge {judge} · vs {baseline}"
        gate = _gate_for(data, bench, judge, baseline)
        caption = f"Paired differences to {baseline}, {title} (bars: {level} intervals)"
        if gate is not None:
            caption += (f"; shaded: the gate's margin ±{fmt_number(gate.margin)} (the gate decides on the "
                        f"{fmt_level(gate.level)} interval)")
        rows = [[r.model, r.category, fmt_number(r.diff, signed=True), fmt_interval(r.low, r.high, signed=True),
                 fmt_number(r.se), fmt_number(r.mde), fmt_count(r.questions), fmt_count(r.missing)]
                for r in part.itertuples()]
        png = figures.forest_figure(part, margin=gate.margin if gate else None, title=title)
        blocks.append({"title": title, "overview": _overview(part, "diff", level, signed=True, last=("MDE", "mde")),
                       "table": _table(["candidate", "category", "difference", f"{level} interval", "SE", "MDE",
                                        "questions", "missing"], rows),
                       "figure": figs.add(f"forest {bench} {judge} {baseline}", png, caption + ".")})
    return {"blocks": blocks, "explained": MDE_EXPLAINED, "empty": None if blocks else EMPTY["diffs"]}


def _seeds(data: ReportData, figs: _Figures) -> dict[str, Any]:
    level, blocks = fmt_level(data.level), []
    for (bench, judge, baseline), part in _groups(data.seeds, ["bench", "judge", "baseline"]):
        title = f"{bench} · judge {judge} · vs {baseline}"
        rows, summary = [], []
        for (group,), g in _groups(part, ["group"]):
            g = g.sort_values("seed", kind="stable")
            rows += [[group, r.seed, r.model, fmt_number(r.diff, signed=True),
                      fmt_interval(r.low, r.high, signed=True)] for r in g.itertuples()]
            d = pd.to_numeric(g["diff"], errors="coerce").dropna().to_numpy(float)
            sd = float(np.std(d, ddof=1)) if len(d) > 1 else None  # sample SD: seeds are a sample of training runs
            spread = (f"{fmt_interval(d.min(), d.max(), signed=True)} (width {fmt_number(d.max() - d.min())})"
                      if len(d) else "n/a")
            summary.append([group, len(d), fmt_number(d.mean() if len(d) else None, signed=True),
                            fmt_number(sd), spread])
        blocks.append({"title": title,
                       "table": _table(["group", "seed", "model", "difference", f"{level} interval"], rows),
                       "summary": _table(["group", "seeds", "mean difference", "between-seed SD", "range"], summary),
                       "figure": figs.add(f"seeds {bench} {judge} {baseline}", figures.seed_figure(part),
                                          f"Differences per training seed, {title} (bars: {level} intervals; "
                                          "shade: range across seeds).")})
    return {"blocks": blocks, "explained": SEEDS_EXPLAINED, "empty": None if blocks else EMPTY["seeds"]}


def _ablations(data: ReportData, figs: _Figures) -> dict[str, Any]:
    level, blocks = fmt_level(data.level), []
    for name, grid in data.ablations.items():
        keys = [k for k in ("bench", "judge", "baseline") if k in grid.columns]
        for key, part in (_groups(grid, keys) if keys else [((), grid)]):
            axes = figures.grid_axes(part)
            prefix = {"bench": "", "judge": "judge ", "baseline": "vs "}
            title = " · ".join([str(name)] + [f"{prefix[c]}{v}" for c, v in zip(keys, key)])
            rows = [[*(r[a] for a in axes), r["model"], fmt_number(r["diff"], signed=True),
                     fmt_interval(r["low"], r["high"], signed=True)] for _, r in part.iterrows()]
            blocks.append({"title": title,
                           "table": _table([*axes, "model", "difference", f"{level} interval"], rows),
                           "figure": figs.add(f"ablation {title}", figures.ablation_figure(part, title),
                                              f"Ablation grid {title}: difference to the baseline and the width "
                                              f"of its {level} interval.")})
    return {"blocks": blocks, "empty": None if blocks else EMPTY["ablations"]}


def _metrics(data: ReportData) -> dict[str, Any]:
    def value(r) -> str:  # lm-eval leaves stderr empty for some metrics: then the value alone
        err = fmt_number(r.stderr)
        return fmt_number(r.value) + ("" if err == "n/a" else f" ± {err}")

    rows = [[r.model, r.task, r.metric, value(r)] for r in data.metrics.itertuples()]
    return {"table": _table(["model", "task", "metric", "value ± stderr"], rows) if rows else None,
            "empty": None if rows else EMPTY["metrics"]}


def _trends(data: ReportData, figs: _Figures) -> dict[str, Any]:
    blocks = []
    for (bench, judge), part in _groups(data.history, ["bench", "judge"]):
        title = f"{bench} · judge {judge}"
        ref = figs.add(f"trend {bench} {judge}", figures.trend_figure(part),
                       f"Nightly trend, {title} (band: interval).")
        if ref:
            started = pd.to_numeric(part["started"], errors="coerce")
            blocks.append({"title": title, "figure": ref,
                           "runs": f"{part['run_id'].nunique()} runs from {fmt_time(started.min())} "
                                   f"to {fmt_time(started.max())}."})
    return {"blocks": blocks, "empty": None if blocks else EMPTY["trends"]}


def _merge(data: ReportData, figs: _Figures) -> dict[str, Any]:
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


def _examples(data: ReportData) -> dict[str, Any]:
    out = []
    for ex in data.examples:
        models = list(ex.answers)
        n = max([len(ex.turns)] + [len(a) for a in ex.answers.values()])
        rows = []
        for i in range(n):
            cells = []
            for m in models:
                answers, scores = ex.answers.get(m, []), ex.scores.get(m, [])
                score = scores[i] if i < len(scores) else None
                cells.append({"text": answers[i] if i < len(answers) else "(no answer)",
                              "score": None if score is None else fmt_number(score)})
            rows.append({"turn": i + 1, "question": ex.turns[i] if i < len(ex.turns) else "", "cells": cells})
        out.append({"title": f"{ex.bench} · question {ex.question_id} · {ex.category}", "models": models,
                    "rows": rows})
    return {"entries": out, "empty": None if out else EMPTY["examples"]}


def _md_escape(value: Any) -> str:
    """Any value printed into Markdown: HTML-escaped, Markdown syntax backslash-escaped, one line."""
    if value is None:
        return ""
    text = html.escape(str(value), quote=False)
    text = re.sub(r"([\\`*_\[\]|])", r"\\\1", text)
    return re.sub(r"\r\n?|\n", "<br>", text)  # a lone CR ends a Markdown line too


def _escape_tree(value: Any, escape) -> Any:
    """`value` with every string in it (dict values, list and tuple items) passed through `escape`."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {k: _escape_tree(v, escape) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_escape_tree(v, escape) for v in value)
    return value


def _render(fmt: str, ctx: dict[str, Any]) -> str:
    """The report text in `fmt`, with every value escaped for that format."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True,
                             # autoescape=True, never select_autoescape: HTML output escapes whatever the file name
                             autoescape=fmt == "html")
    if fmt == "md":  # Markdown has no autoescape: escape the values themselves, never the template's structure
        ctx = _escape_tree(ctx, _md_escape)
    return env.get_template(f"report.{fmt}.j2").render(**ctx).lstrip()


def build_context(data: ReportData) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Everything the templates show, as text, and the figures by file name."""
    figs = _Figures()
    ctx = {"title": data.title, "level": fmt_level(data.level), "headline": headline(data),
           "run": _run_facts(data), "scores": _scores(data, figs), "diffs": _diffs(data, figs),
           "seeds": _seeds(data, figs), "ablations": _ablations(data, figs), "metrics": _metrics(data),
           "trends": _trends(data, figs), "merge": _merge(data, figs), "missing": _missing(data),
           "examples": _examples(data), "empty": EMPTY}
    return ctx, figs.files


def render_report(data: ReportData, out_dir: Path, formats: Iterable[str] = FORMATS) -> dict[str, Path]:
    """Write figures/*.png and report.<fmt> for each format into out_dir; return their paths by format."""
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"render_report: unknown report format(s) {unknown}; allowed: {list(FORMATS)}")
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    ctx, pngs = build_context(data)
    for name, png in pngs.items():
        atomic_write_bytes(fig_dir / name, png)
    for stale in fig_dir.glob("*.png"):  # a figure an earlier render of this directory drew and this one did not
        if stale.name not in pngs:
            stale.unlink()
    written = {"figures": fig_dir}
    for fmt in ("md", "html"):  # the summary that links figures first, the full report last
        if fmt in formats:
            text = _render(fmt, ctx)
            written[fmt] = out_dir / f"report.{fmt}"
            atomic_write_bytes(written[fmt], text.encode("utf-8"))
    return written
