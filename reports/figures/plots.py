"""Point-and-interval figures: scores per category, forest plots with the gate, seeds, nightly trends.

    styles = model_styles(data.models)
    png = scores_figure(part, styles=styles)              # one small panel per category, a row per model
    png = forest_figure(part, margin=0.05, styles=styles, verdicts={"fused-varm@s0": "improved"})

Each function takes plain tables and returns PNG bytes (see `canvas`), or None if nothing to draw.
Every point carries its interval (DESIGN.md section 3.5). Wide content wraps into more rows of panels
or grows in height, never in width: the page shows a figure at most PAGE_PX wide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from reports.data import ALL
from reports.figures.canvas import (
    MAX_WIDTH_IN,
    arrays,
    categories,
    facet_grid,
    figure,
    label_width,
    literal,
    to_png,
    wrapped,
    yerr,
)
from reports.figures.styles import MARGIN_COLOR, VERDICT_COLORS, Style, model_styles, styles_for
from reports.fmt import fmt_number

ROW_IN = 0.21         # height of one model's row: a 10 pt label (0.14 in) and some air
MIN_PANEL_IN = 1.5    # the narrowest category panel that still takes three x tick labels
TREND_MODELS_PER_PANEL = 4


def _point(ax: Axes, x: np.ndarray, y: np.ndarray, style: Style, err: np.ndarray) -> None:
    """Points with their horizontal interval bars in one model's colour and marker."""
    colour, marker = style
    ax.errorbar(x, y, xerr=err, fmt=marker, color=colour, markersize=6, capsize=3, elinewidth=1.4)


def _legend(fig: Figure, handles: list, columns: int) -> None:
    """A legend under the whole figure (constrained layout makes room for it)."""
    fig.legend(handles=handles, loc="outside lower center", ncols=max(1, min(columns, len(handles))),
               frameon=False)


def scores_figure(scores: pd.DataFrame, styles: dict[str, Style] | None = None) -> bytes | None:
    """Mean score with its interval: one panel per category ('all' first), one row per model; one bench x judge."""
    df = scores.dropna(subset=["mean"])
    if df.empty:
        return None
    cats, models = categories(df["category"].unique()), [str(m) for m in dict.fromkeys(df["model"])]
    styles = styles_for(models, styles)
    labels_in = label_width(models)
    nrows, ncols = facet_grid(len(cats), max(1, int((MAX_WIDTH_IN - labels_in) // MIN_PANEL_IN)))
    panel_in = min(2.8, (MAX_WIDTH_IN - labels_in) / ncols)
    y_of = {m: len(models) - 1 - i for i, m in enumerate(models)}  # the first model on top
    with figure(labels_in + ncols * panel_in, 0.9 + nrows * (0.75 + ROW_IN * len(models))) as fig:
        axs = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
        for k, ax in enumerate(axs.flat):
            if k >= len(cats):
                ax.set_visible(False)
                axs.flat[k - ncols].xaxis.set_tick_params(labelbottom=True)  # the panel above shows the scale
                continue
            part = df[df["category"].astype(str) == cats[k]]
            for model, rows in part.groupby("model", sort=False):
                mean, low, high = arrays(rows, "mean")
                _point(ax, mean, np.full(len(mean), y_of[str(model)]), styles[str(model)], err=yerr(mean, low, high))
            pooled = cats[k] == ALL and len(cats) > 1
            ax.set_title(wrapped("all (pooled)" if pooled else cats[k], panel_in),
                         fontweight="bold" if pooled else "normal")
            if pooled:
                ax.set_facecolor("0.94")  # the pooled score stands apart from the categories
            ax.grid(axis="x", alpha=0.3)
            ticks = max(2, int(panel_in / 0.55))  # a tick label ("0.25") takes about 0.35 in
            ax.xaxis.set_major_locator(MaxNLocator(nbins=ticks, steps=[1, 2, 2.5, 5, 10], min_n_ticks=2))
        axs[0, 0].set_yticks(range(len(models)), [literal(m) for m in reversed(models)])
        axs[0, 0].set_ylim(-0.6, len(models) - 0.4)
        first = df.iloc[0]
        fig.suptitle(literal(f"{first['bench']} · judge {first['judge']}"))
        fig.supxlabel("mean score (bars: interval)")
        return to_png(fig)


def _margin_band(ax: Axes, margin: float | None) -> Patch | None:
    """Shades ±margin around 0 when there is a margin; the band's legend handle."""
    if margin is None or not np.isfinite(margin) or margin <= 0:
        return None
    ax.axvspan(-margin, margin, color=MARGIN_COLOR, alpha=0.45, zorder=0, linewidth=0)
    return Patch(color=MARGIN_COLOR, alpha=0.45, label=f"margin ±{fmt_number(margin)}")


def _mark_verdicts(ax: Axes, y: np.ndarray, verdicts: Sequence[str | None]) -> list:
    """Each row's verdict as a coloured word right of the plot; legend handles of the verdicts shown."""
    where = blended_transform_factory(ax.transAxes, ax.transData)  # x in axes units, y in rows
    ax.text(1.02, 1.0, "gate verdict", transform=ax.transAxes, ha="left", va="bottom", fontweight="bold")
    for yi, verdict in zip(y, verdicts):
        if verdict:
            ax.text(1.02, yi, str(verdict), transform=where, ha="left", va="center", clip_on=False,
                    color=VERDICT_COLORS.get(str(verdict), "black"), fontweight="bold")
    shown = [v for v in VERDICT_COLORS if v in verdicts]
    return [Patch(color=VERDICT_COLORS[v], label=v) for v in shown]


def _forest(ax: Axes, labels: list[str], diff: np.ndarray, low: np.ndarray, high: np.ndarray,
            styles: list[Style], margin: float | None) -> tuple[np.ndarray, list]:
    """Rows top to bottom: point + interval in each model's style, a line at 0, the ±margin band."""
    y = np.arange(len(labels))[::-1].astype(float)
    band = _margin_band(ax, margin)
    ax.axvline(0, color="0.3", linewidth=1)
    err = yerr(diff, low, high)
    for i, style in enumerate(styles):
        _point(ax, diff[i:i + 1], y[i:i + 1], style, err=err[:, i:i + 1])
    ax.set_yticks(y, [literal(t) for t in labels])
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.grid(axis="x", alpha=0.3)
    return y, [band] if band else []


def forest_figure(diffs: pd.DataFrame, margin: float | None = None, title: str = "",
                  label: Callable[[pd.Series], str] | None = None, *, styles: dict[str, Style] | None = None,
                  verdicts: dict[str, str] | None = None) -> bytes | None:
    """Forest plot: a row per candidate (overall category) with its interval, the ±margin band, each verdict."""
    df = diffs[diffs["category"] == ALL] if "category" in diffs.columns else diffs
    df = df.dropna(subset=["diff"])
    if df.empty:
        return None
    names = [str(m) for m in df["model"]]
    labels = [label(r) if label else str(r["model"]) for _, r in df.iterrows()]
    styles = styles_for(names, styles)
    with figure(label_width(labels) + 6.0 + (1.4 if verdicts else 0.0), 1.5 + 0.32 * len(df)) as fig:
        ax = fig.add_subplot()
        y, handles = _forest(ax, labels, *arrays(df), [styles[n] for n in names], margin)
        if verdicts:
            handles += _mark_verdicts(ax, y, [verdicts.get(n) for n in names])
        ax.set_xlabel("difference to the baseline (bars: interval)")
        if title:
            ax.set_title(literal(title))
        if handles:
            _legend(fig, handles, 5)
        return to_png(fig)


def seed_figure(seeds: pd.DataFrame, title: str = "", styles: dict[str, Style] | None = None,
                margin: float | None = None) -> bytes | None:
    """Per group, each training seed's difference with its interval; the shaded span is the between-seed range."""
    df = seeds.dropna(subset=["diff"])
    if df.empty:
        return None
    groups = list(dict.fromkeys(df["group"]))
    own = model_styles({str(r.model): {"group": r.group, "seed": r.seed} for r in df.itertuples()})
    styles = {**own, **{m: s for m, s in (styles or {}).items() if m in own}}
    labels, ticks, pos = [], [], 0.0
    with figure(label_width([f"{g} · seed 00" for g in groups]) + 6.0, 1.5 + 0.32 * (len(df) + len(groups))) as fig:
        ax = fig.add_subplot()
        band = _margin_band(ax, margin)
        for group in groups:
            part = df[df["group"] == group].sort_values("seed")
            ys = pos - np.arange(len(part))
            diff, low, high = arrays(part)
            colour = styles[str(part["model"].iloc[0])][0]
            ax.fill_betweenx([ys[-1] - 0.35, ys[0] + 0.35], np.nanmin(diff), np.nanmax(diff), color=colour,
                             alpha=0.15, linewidth=0)
            err = yerr(diff, low, high)
            for i, model in enumerate(part["model"]):
                _point(ax, diff[i:i + 1], ys[i:i + 1], styles[str(model)], err=err[:, i:i + 1])
            labels += [f"{group} · seed {s}" for s in part["seed"]]
            ticks += list(ys)
            pos = ys[-1] - 1.6  # a gap between groups
        ax.axvline(0, color="0.3", linewidth=1)
        ax.set_yticks(ticks, [literal(t) for t in labels])
        ax.set_xlabel("difference to the baseline (bars: interval; shade: range across seeds)")
        ax.grid(axis="x", alpha=0.3)
        if title:
            ax.set_title(literal(title))
        if band:
            _legend(fig, [band], 1)
        return to_png(fig)


def _trend_panel(ax: Axes, df: pd.DataFrame, styles: dict[str, Style], ticks: int) -> list:
    """A line per model over the runs' start dates with its interval band; legend handles."""
    handles = []
    for model, part in df.groupby("model", sort=False):
        part = part.sort_values("started")
        when = [datetime.fromtimestamp(float(s), tz=UTC) for s in part["started"]]
        mean, low, high = arrays(part, "mean")
        colour, marker = styles[str(model)]
        ax.plot(when, mean, marker=marker, color=colour)
        ax.fill_between(when, low, high, color=colour, alpha=0.15, linewidth=0)
        handles.append(Line2D([], [], color=colour, marker=marker, label=literal(model)))
    locator = AutoDateLocator(minticks=2, maxticks=ticks)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)
    return handles


def trend_figure(history: pd.DataFrame, styles: dict[str, Style] | None = None) -> bytes | None:
    """Nightly trend: a line per model over the runs' start dates, its interval as a band; needs >= 2 runs.

    Up to TREND_MODELS_PER_PANEL models share one panel; more get a panel per recipe (models of one
    colour), on one y scale, so the bands do not pile up into one grey mass.
    """
    df = history.dropna(subset=["mean", "started"])
    if df["run_id"].nunique() < 2:
        return None
    models = [str(m) for m in dict.fromkeys(df["model"])]
    styles = styles_for(models, styles)
    recipes: dict[str, list[str]] = {}
    for m in models:
        recipes.setdefault(styles[m][0], []).append(m)
    panels = [models] if len(models) <= TREND_MODELS_PER_PANEL else list(recipes.values())
    nrows, ncols = facet_grid(len(panels), 4)
    columns = max(1, int(MAX_WIDTH_IN // (label_width(models) + 0.5)))
    with figure(10.0 if ncols == 1 else MAX_WIDTH_IN,
                1.2 + nrows * (3.2 if nrows == 1 else 2.2) + 0.25 * -(-len(models) // columns)) as fig:
        axs = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
        handles = []
        for k, ax in enumerate(axs.flat):
            if k >= len(panels):
                ax.set_visible(False)
                axs.flat[k - ncols].xaxis.set_tick_params(labelbottom=True)
                continue
            handles += _trend_panel(ax, df[df["model"].astype(str).isin(panels[k])], styles, 7 if ncols == 1 else 4)
        first = df.iloc[0]
        fig.suptitle(literal(f"{first['bench']} · judge {first['judge']} · by run start (UTC)"))
        fig.supylabel("mean score (band: interval)")
        _legend(fig, handles, columns)
        return to_png(fig)
