"""Building blocks of the report's sections: the figure registry, tables as text, row orders.

Every value leaves here as text, worded by `reports.fmt`; the templates only lay it out.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd

from reports.data import ALL, ReportData
from reports.fmt import fmt_count, fmt_interval, fmt_number

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
LEADS = {  # the one sentence that opens each section: what it shows
    "recipes": "Each recipe's difference to each baseline with its seeds combined: the numbers of the decision, "
               "drawn.",
    "scores": "Every model's mean score per category, with {level} intervals over questions.",
    "seeds": "How much the result depends on the training seed: each recipe's difference with its seeds combined, "
             "and the spread between seeds.",
    "noise": "Where each model's score noise comes from: question difficulty, sampled answers, judge repeats, "
             "and what doubling each would do to the interval.",
    "ablations": "The grid of settings, one cell per setting: its difference to the baseline and how wide its "
                 "interval is.",
    "method": "The clusters, resamples and levels behind every interval, and what produced the answers and "
              "judgments.",
    "detail": "Everything else, folded: per-model differences, the run and its models, trends, merge weights, "
              "missing judgments, example answers.",
}


class Figures:
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


def groups(df: pd.DataFrame, keys: list[str]) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """Sub-tables by `keys`, in order of first appearance (empty frames yield nothing)."""
    if df.empty:
        return
    for key, part in df.groupby(keys, sort=False, dropna=False):
        yield (key if isinstance(key, tuple) else (key,)), part


def table(columns: list[str], rows: Iterable[Iterable[Any]]) -> dict[str, Any]:
    return {"columns": columns, "rows": [["" if v is None else str(v) for v in r] for r in rows]}


def text(value: Any) -> str:
    """A run fact or recipe as one line of text (dicts and lists as compact JSON)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return "" if value is None else str(value)


def category_order(df: pd.DataFrame) -> pd.DataFrame:
    """The pooled 'all' rows first, then each category by name; models keep their order within each."""
    key = df["category"].map(lambda c: (0, "") if c == ALL else (1, str(c)))
    return df.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k")


def overview(part: pd.DataFrame, value: str, level: str, signed: bool = False,
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
    return table(["model", *[f"{c} ({level} interval)" if c == ALL else c for c in cats], last[0]], rows)


def in_model_order(data: ReportData, part: pd.DataFrame) -> pd.DataFrame:
    """Rows in the run's model order (baselines first, as the suite lists them)."""
    if part.empty or "model" not in part.columns:
        return part
    order = {m: i for i, m in enumerate(data.models)}
    return part.assign(_o=part["model"].map(lambda m: order.get(m, len(order)))).sort_values(
        "_o", kind="stable").drop(columns="_o")


