"""The report's figures: each function takes plain tables and returns PNG bytes, or None if nothing to draw.

    png = scores_figure(data.scores.query("bench == 'zoo' and judge == 'llm'"))
    png = forest_figure(overall_diffs_against_pivot, margin=0.25)

Figures are `matplotlib.figure.Figure` objects drawn on their own Agg canvas: no pyplot, so no
global figure registry and no backend switch leak into the caller's process. Each figure is
cleared once its PNG is written. Every point carries its interval (DESIGN.md section 3.5).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from reports.data import ALL
from reports.fmt import fmt_number

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
          "#bcbd22"]
# the usual order of a transformer block's matrices, so every heatmap reads the same way
MATRIX_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GRID_VALUE_COLUMNS = {"model", "bench", "judge", "baseline", "category", "diff", "low", "high", "se", "mde",
                      "questions", "rows", "missing"}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


@contextmanager
def _figure(width: float, height: float) -> Iterator[Figure]:
    """A fresh figure on its own Agg canvas, cleared on exit."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    try:
        yield fig
    finally:
        fig.clear()


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})  # no version stamp: stable bytes
    return buf.getvalue()


def _label(text: object) -> str:
    """Model text as a literal label: '$' would start mathtext, a leading '_' hides a legend entry."""
    s = str(text).replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def _yerr(mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Asymmetric error-bar lengths (never negative, NaN where the interval is unknown)."""
    return np.vstack([np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)])


def _arrays(df: pd.DataFrame, mean: str = "diff") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The estimate, low and high columns as float arrays (NaN where a value is missing)."""
    m, lo, hi = (pd.to_numeric(df[c], errors="coerce").to_numpy(float) for c in (mean, "low", "high"))
    return m, lo, hi


def _categories(cats: Sequence[object]) -> list[str]:
    """Category order: 'all' first, then the rest sorted."""
    names = {str(c) for c in cats}
    return ([ALL] if ALL in names else []) + sorted(names - {ALL})


def scores_figure(scores: pd.DataFrame) -> bytes | None:
    """Mean score with its interval per category (x) for every model (offset series); rows of one bench x judge."""
    df = scores.dropna(subset=["mean"])
    if df.empty:
        return None
    cats, models = _categories(df["category"].unique()), list(dict.fromkeys(df["model"]))
    x_of = {c: i for i, c in enumerate(cats)}
    span = 0.7  # the share of a category's slot the model series spread over
    step = span / max(len(models), 1)
    with _figure(max(6.0, 1.1 * len(cats) + 0.25 * len(models) * len(cats)), 4.2) as fig:
        ax = fig.add_subplot()
        for i, model in enumerate(models):
            part = df[df["model"] == model]
            mean, low, high = _arrays(part, "mean")
            x = np.array([x_of[str(c)] for c in part["category"]]) - span / 2 + step * (i + 0.5)
            ax.errorbar(x, mean, yerr=_yerr(mean, low, high), fmt="o", capsize=3, color=COLORS[i % len(COLORS)],
                        label=_label(model))
        if cats[0] == ALL and len(cats) > 1:
            ax.axvspan(-0.5, 0.5, color="0.93", zorder=0)  # the pooled score stands apart from the categories
            ax.axvline(0.5, color="0.4", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(cats)), [_label(c) for c in cats], rotation=30 if len(cats) > 6 else 0, ha="right"
                      if len(cats) > 6 else "center")
        ax.set_xlim(-0.5, len(cats) - 0.5)
        first = df.iloc[0]
        ax.set_title(_label(f"{first['bench']} · judge {first['judge']}"))
        ax.set_ylabel("mean score (bars: interval)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _png(fig)


def _forest(ax, labels: list[str], diff: np.ndarray, low: np.ndarray, high: np.ndarray,
            margin: float | None) -> None:
    """Rows top to bottom: point + interval, a line at 0, the ±margin band when there is one."""
    y = np.arange(len(labels))[::-1]
    if margin is not None and np.isfinite(margin) and margin > 0:
        ax.axvspan(-margin, margin, color="#ffd966", alpha=0.35, zorder=0,
                   label=f"margin ±{fmt_number(margin)}")
        ax.legend(loc="lower right", frameon=False, fontsize=8)
    ax.axvline(0, color="0.3", linewidth=1)
    ax.errorbar(diff, y, xerr=_yerr(diff, low, high), fmt="o", capsize=3, color=COLORS[0])
    ax.set_yticks(y, [_label(t) for t in labels])
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.grid(axis="x", alpha=0.3)


def forest_figure(diffs: pd.DataFrame, margin: float | None = None, title: str = "",
                  label: Callable[[pd.Series], str] | None = None) -> bytes | None:
    """Forest plot: one row per candidate (overall category), difference with its interval, ±margin band."""
    df = diffs[diffs["category"] == ALL] if "category" in diffs.columns else diffs
    df = df.dropna(subset=["diff"])
    if df.empty:
        return None
    labels = [label(r) if label else str(r["model"]) for _, r in df.iterrows()]
    with _figure(7.0, 1.2 + 0.45 * len(df)) as fig:
        ax = fig.add_subplot()
        _forest(ax, labels, *_arrays(df), margin)
        ax.set_xlabel("difference to the baseline (bars: interval)")
        if title:
            ax.set_title(_label(title))
        return _png(fig)


def grid_axes(grid: pd.DataFrame) -> list[str]:
    """The axis columns of an ablation grid: every column that is not a model, comparison or value column."""
    return [c for c in grid.columns if c not in GRID_VALUE_COLUMNS]


def _ordered(values: pd.Series) -> list:
    """Axis values sorted when all are numbers, else in order of first appearance."""
    unique = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in unique):
        return sorted(unique)
    return unique


def _span_norm(values: np.ndarray) -> Normalize:
    """A colour scale over the finite values; a constant grid gets a small span so it maps to mid-scale."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-9:
        pad = max(abs(lo) * 0.1, 0.05)
        lo, hi = lo - pad, hi + pad
    return Normalize(lo, hi)


def _heat(ax, values: np.ndarray, rows: list, cols: list, cmap: str, norm, signed: bool, annotate: bool = True):
    """One annotated heatmap; empty cells stay blank."""
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    tilt = len(cols) > 4 or sum(len(str(c)) for c in cols) > 6 * len(cols)  # long labels would overlap
    ax.set_xticks(range(len(cols)), [_label(c) for c in cols], rotation=30 if tilt else 0,
                  ha="right" if tilt else "center")
    ax.set_yticks(range(len(rows)), [_label(r) for r in rows])
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                r, g, b, _ = im.cmap(im.norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # light text on dark cells
                ax.text(j, i, fmt_number(v, signed=signed), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    return im


def _grid_heatmaps(df: pd.DataFrame, axes: list[str], title: str) -> bytes:
    a, b = axes
    rows, cols = _ordered(df[a]), _ordered(df[b])
    diff = df.pivot(index=a, columns=b, values="diff").reindex(index=rows, columns=cols).to_numpy(float)
    width = (df.assign(width=df["high"] - df["low"]).pivot(index=a, columns=b, values="width")
             .reindex(index=rows, columns=cols).to_numpy(float))
    lim = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
    lim = lim or 1.0
    with _figure(max(9.0, 1.6 * len(cols) * 2 + 3), 2.0 + 0.6 * len(rows)) as fig:
        left, right = fig.subplots(1, 2)
        im = _heat(left, diff, rows, cols, "RdBu", TwoSlopeNorm(0.0, -lim, lim), signed=True)
        fig.colorbar(im, ax=left, shrink=0.8)
        left.set_title("difference to the baseline")
        im = _heat(right, width, rows, cols, "viridis", _span_norm(width), signed=False)
        fig.colorbar(im, ax=right, shrink=0.8)
        right.set_title("interval width (high − low)")
        for ax in (left, right):
            ax.set_xlabel(_label(b))
            ax.set_ylabel(_label(a))
        if title:
            fig.suptitle(_label(title))
        return _png(fig)


def ablation_figure(grid: pd.DataFrame, title: str = "") -> bytes | None:
    """Two axes: heatmaps of difference and interval width; one axis: a forest along it; more: a forest by model."""
    df = grid.dropna(subset=["diff"])
    if df.empty:
        return None
    axes = grid_axes(df)
    if len(axes) == 2 and not df.duplicated(axes).any():
        return _grid_heatmaps(df, axes, title)
    if len(axes) == 1:
        (axis,) = axes
        df = df.iloc[np.argsort([_ordered(df[axis]).index(v) for v in df[axis]], kind="stable")]
        many = df[axis].duplicated(keep=False).any()  # several models share a value: name them too

        def label(r: pd.Series) -> str:
            return f"{axis} = {r[axis]}" + (f" · {r['model']}" if many else "")

        return forest_figure(df, title=title, label=label)
    return forest_figure(df, title=title)


def trend_figure(history: pd.DataFrame) -> bytes | None:
    """Nightly trend: one line per model over the runs' start dates, its interval as a band; needs >= 2 runs."""
    df = history.dropna(subset=["mean", "started"])
    if df["run_id"].nunique() < 2:
        return None
    with _figure(8.0, 4.2) as fig:
        ax = fig.add_subplot()
        for i, (model, part) in enumerate(df.groupby("model", sort=False)):
            part = part.sort_values("started")
            when = [datetime.fromtimestamp(float(s), tz=UTC) for s in part["started"]]
            mean, low, high = _arrays(part, "mean")
            color = COLORS[i % len(COLORS)]
            ax.plot(when, mean, marker="o", color=color, label=_label(model))
            ax.fill_between(when, low, high, color=color, alpha=0.2, linewidth=0)
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        first = df.iloc[0]
        ax.set_title(_label(f"{first['bench']} · judge {first['judge']}"))
        ax.set_xlabel("run start (UTC)")
        ax.set_ylabel("mean score (band: interval)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _png(fig)


def tensor_cell(name: str) -> tuple[int | str, str]:
    """Where a tensor goes in the weight heatmap: (layer index, matrix kind), or (its name, 'whole tensor')."""
    m = _LAYER.search(name)
    if not m:
        return name.removesuffix(".weight"), "whole tensor"
    parts = m.group(2).split(".")
    if parts[-1] == "weight" and len(parts) > 1:
        parts = parts[:-1]
    kind = ".".join(parts[-2:]) if parts[-1] == "bias" and len(parts) > 1 else parts[-1]
    return int(m.group(1)), kind


def merge_weights_figure(model: str, entry: dict) -> bytes | None:
    """One heatmap per merge input of its weight per layer (rows) and matrix kind (columns)."""
    weights = entry.get("weights") or {}
    if not weights:
        return None
    n_first = np.atleast_1d(next(iter(weights.values()))).shape[0]
    inputs = [str(x) for x in entry.get("inputs") or [f"input {i}" for i in range(n_first)]]
    cells: dict[tuple[int | str, str], list[np.ndarray]] = {}
    for name, w in weights.items():
        w = np.asarray(w, dtype=float)
        if w.ndim == 0 or w.shape[0] != len(inputs):
            raise ValueError(f"merge_weights[{model!r}]: tensor {name!r} has weights of shape {w.shape} "
                             f"for {len(inputs)} inputs {inputs}; expected one weight per input")
        cells.setdefault(tensor_cell(name), []).append(w.reshape(len(inputs), -1).mean(axis=1))
    keys = list(cells)
    layers = sorted({r for r, _ in keys if isinstance(r, int)})
    rows = layers + list(dict.fromkeys(r for r, _ in keys if not isinstance(r, int)))
    kinds = list(dict.fromkeys(k for _, k in keys))
    cols = [k for k in MATRIX_ORDER if k in kinds] + [k for k in kinds if k not in MATRIX_ORDER]
    # several tensors in one cell (e.g. the experts of a layer): their mean weight
    grid = np.full((len(inputs), len(rows), len(cols)), np.nan)
    for (r, k), ws in cells.items():
        grid[:, rows.index(r), cols.index(k)] = np.mean(ws, axis=0)
    norm = _span_norm(grid)  # one scale for every panel, so colours compare across inputs
    ncols = min(len(inputs), 3)
    nrows = -(-len(inputs) // ncols)
    row_labels = [f"layer {r}" if isinstance(r, int) else r for r in rows]
    with _figure(max(6.0, 0.9 * len(cols) * ncols + 2.5), (1.6 + 0.3 * len(rows)) * nrows) as fig:
        axs = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for i, ax in enumerate(axs):
            if i >= len(inputs):
                ax.set_visible(False)
                continue
            im = _heat(ax, grid[i], row_labels, cols, "viridis", norm, signed=False,
                       annotate=len(rows) * len(cols) <= 120)
            ax.set_title(_label(inputs[i]))
        fig.colorbar(im, ax=list(axs[: len(inputs)]), shrink=0.8, label="weight")
        fig.suptitle(_label(f"{model}: weight of each input per matrix"))
        return _png(fig)


def seed_figure(seeds: pd.DataFrame) -> bytes | None:
    """Per group, each training seed's difference with its interval; the shaded span is the between-seed range."""
    df = seeds.dropna(subset=["diff"])
    if df.empty:
        return None
    groups = list(dict.fromkeys(df["group"]))
    labels, y, pos = [], [], 0.0
    with _figure(7.5, 1.2 + 0.45 * (len(df) + len(groups))) as fig:
        ax = fig.add_subplot()
        for gi, group in enumerate(groups):
            part = df[df["group"] == group].sort_values("seed")
            ys = pos - np.arange(len(part))
            diff, low, high = _arrays(part)
            color = COLORS[gi % len(COLORS)]
            ax.fill_betweenx([ys[-1] - 0.35, ys[0] + 0.35], diff.min(), diff.max(), color=color, alpha=0.15,
                             linewidth=0)
            ax.errorbar(diff, ys, xerr=_yerr(diff, low, high), fmt="o", capsize=3, color=color)
            labels += [f"{group} · seed {s}" for s in part["seed"]]
            y += list(ys)
            pos = ys[-1] - 1.6  # a gap between groups
        ax.axvline(0, color="0.3", linewidth=1)
        ax.set_yticks(y, [_label(t) for t in labels])
        ax.set_xlabel("difference to the baseline (bars: interval; shade: range across seeds)")
        ax.grid(axis="x", alpha=0.3)
        return _png(fig)
