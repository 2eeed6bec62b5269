"""Heatmaps: ablation grids (difference and interval width per cell) and merge weights per layer and matrix.

    png = ablation_figure(data.ablations["method x density · seed 0"], "method x density · seed 0")
    png = merge_weights_figure("fused-varm@s0", data.merge_weights["fused-varm@s0"])

Every cell is annotated at 10 pt and is wide enough for its number; panels sit side by side while
they fit the page's width, else they stack. Colour scales are fixed or symmetric (see `styles`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize

from reports.figures.canvas import MAX_WIDTH_IN, figure, label_width, literal, to_png, wrapped
from reports.figures.plots import forest_figure
from reports.figures.styles import Style, diff_norm, weight_norm, width_norm
from reports.fmt import fmt_number

# the usual order of a transformer block's matrices, so every heatmap reads the same way
MATRIX_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
GRID_VALUE_COLUMNS = {"model", "bench", "judge", "baseline", "category", "diff", "low", "high", "se", "mde",
                      "questions", "rows", "missing"}
CELL_IN = 0.5        # a cell's width: room for "+0.00" at 10 pt (about 0.4 in)
WEIGHT_CELL_IN = 0.4  # room for "0.00" (about 0.31 in)
ROW_IN = 0.32        # a cell's height
COLORBAR_IN = 1.0    # a colour bar with its ticks and label
ANNOTATE_MAX_CELLS = 160
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


def grid_axes(grid: pd.DataFrame) -> list[str]:
    """The axis columns of an ablation grid: every column that is not a model, comparison or value column."""
    return [c for c in grid.columns if c not in GRID_VALUE_COLUMNS]


def _ordered(values: pd.Series) -> list:
    """Axis values sorted when all are numbers, else in order of first appearance."""
    unique = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in unique):
        return sorted(unique)
    return unique


def _tilted(cols: Sequence[object], cell_in: float = CELL_IN) -> bool:
    """Whether column labels need tilting so they do not run into each other."""
    return label_width(cols) - 0.25 > cell_in * 0.95


def _left_in(rows: Sequence[object], cols: Sequence[object], cell_in: float = CELL_IN) -> float:
    """Room left of the first panel: its row labels, or the tilted column labels reaching past them."""
    reach = 0.0
    if _tilted(cols, cell_in):  # a label tilted 45 degrees ends at its cell's centre and runs down-left
        reach = max(0.71 * (label_width([c]) - 0.25) - (j + 0.5) * cell_in for j, c in enumerate(cols)) + 0.2
    return max(label_width(rows), reach)


def _heat(ax: Axes, values: np.ndarray, rows: list, cols: list, cmap: str, norm: Normalize, signed: bool,
          annotate: bool = True, cell_in: float = CELL_IN):
    """One annotated heatmap; empty cells stay blank."""
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    tilt = _tilted(cols, cell_in)
    ax.set_xticks(range(len(cols)), [literal(c) for c in cols], rotation=45 if tilt else 0,
                  ha="right" if tilt else "center", rotation_mode="anchor" if tilt else "default")
    ax.set_yticks(range(len(rows)), [literal(r) for r in rows])
    if annotate:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                r, g, b, _ = im.cmap(im.norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # light text on dark cells
                ax.text(j, i, fmt_number(v, signed=signed), ha="center", va="center",
                        color="white" if dark else "black")
    return im


def _side_by_side(panels: int, cols: int, labels_in: float) -> int:
    """How many panels of `cols` cells fit in a row of the page, each with its colour bar: at least 1."""
    panel_in = CELL_IN * max(cols, 2) + COLORBAR_IN
    return max(1, min(panels, int((MAX_WIDTH_IN - labels_in) // panel_in)))


def _grid_heatmaps(df: pd.DataFrame, axes: list[str], title: str, margin: float | None) -> bytes:
    a, b = axes
    rows, cols = _ordered(df[a]), _ordered(df[b])

    def cells(values: pd.Series) -> np.ndarray:
        return (df.assign(v=values.to_numpy(float)).pivot(index=a, columns=b, values="v")
                .reindex(index=rows, columns=cols).to_numpy(float))

    diff, low, high = (cells(pd.to_numeric(df[c], errors="coerce")) for c in ("diff", "low", "high"))
    width = high - low
    labels_in = _left_in(rows, cols) + 0.4  # and the axis name beside them
    per_row = _side_by_side(2, len(cols), labels_in)
    heights = 0.9 + ROW_IN * max(len(rows), 2) + (label_width(cols) * 0.7 if _tilted(cols) else 0.3)
    with figure(labels_in + per_row * (CELL_IN * max(len(cols), 2) + COLORBAR_IN + 0.4),
                0.4 + heights * (2 // per_row)) as fig:
        left, right = fig.subplots(2 // per_row, per_row, squeeze=False).ravel()
        # the scale reaches the largest interval end, so a difference small beside its interval stays pale
        im = _heat(left, diff, rows, cols, "RdBu", diff_norm(np.concatenate([diff, low, high]), margin), signed=True)
        fig.colorbar(im, ax=left, shrink=0.9)
        left.set_title("difference to the baseline")
        im = _heat(right, width, rows, cols, "Greys", width_norm(width), signed=False)
        fig.colorbar(im, ax=right, shrink=0.9)
        right.set_title("interval width (high − low)")
        for ax in (left, right):
            ax.set_xlabel(literal(b))
            ax.set_ylabel(literal(a))
        if title:
            fig.suptitle(literal(title))
        return to_png(fig)


def ablation_figure(grid: pd.DataFrame, title: str = "", styles: dict[str, Style] | None = None,
                    margin: float | None = None) -> bytes | None:
    """Two axes: heatmaps of difference and interval width; one axis: a forest along it; more: a forest by model."""
    df = grid.dropna(subset=["diff"])
    if df.empty:
        return None
    axes = grid_axes(df)
    if len(axes) == 2 and not df.duplicated(axes).any():
        return _grid_heatmaps(df, axes, title, margin)
    if len(axes) == 1:
        (axis,) = axes
        df = df.iloc[np.argsort([_ordered(df[axis]).index(v) for v in df[axis]], kind="stable")]
        many = df[axis].duplicated(keep=False).any()  # several models share a value: name them too

        def label(r: pd.Series) -> str:
            return f"{axis} = {r[axis]}" + (f" · {r['model']}" if many else "")

        return forest_figure(df, margin=margin, title=title, label=label, styles=styles)
    return forest_figure(df, margin=margin, title=title, styles=styles)


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


def _weight_grid(model: str, entry: dict) -> tuple[list[str], list, list[str], np.ndarray]:
    """(inputs, rows, columns, weights[input, row, column]): each cell the mean weight of its tensors."""
    weights = entry.get("weights") or {}
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
    return inputs, rows, cols, grid


def merge_weights_figure(model: str, entry: dict) -> bytes | None:
    """One heatmap per merge input of its weight per layer (rows) and matrix kind (columns), on one fixed scale."""
    if not entry.get("weights"):
        return None
    inputs, rows, cols, grid = _weight_grid(model, entry)
    norm = weight_norm(grid, len(inputs))  # one scale for every panel, so colours compare across inputs
    row_labels = [f"layer {r}" if isinstance(r, int) else str(r) for r in rows]
    labels_in = _left_in(row_labels, cols, WEIGHT_CELL_IN)
    panel_in = WEIGHT_CELL_IN * max(len(cols), 2) + 0.15
    ncols = max(1, min(len(inputs), int((MAX_WIDTH_IN - labels_in - COLORBAR_IN) // panel_in)))
    nrows = -(-len(inputs) // ncols)
    below = label_width(cols) * 0.75 if _tilted(cols, WEIGHT_CELL_IN) else 0.3
    height = max(3.2, 0.6 + below + nrows * (0.4 + ROW_IN * len(rows)))  # room for the colour bar's label
    with figure(labels_in + COLORBAR_IN + ncols * panel_in, height) as fig:
        axs = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        for i, ax in enumerate(axs):
            if i >= len(inputs):
                ax.set_visible(False)  # the columns are named under the last row's panels: the same for all
                continue
            im = _heat(ax, grid[i], row_labels, cols, "PuOr_r", norm, signed=False,
                       annotate=len(rows) * len(cols) <= ANNOTATE_MAX_CELLS, cell_in=WEIGHT_CELL_IN)
            ax.set_title(wrapped(inputs[i], panel_in))
        share = fmt_number(1 / len(inputs)) if len(inputs) > 1 else None
        fig.colorbar(im, ax=list(axs[: len(inputs)]), shrink=0.8,
                     label="weight" + (f" (white: equal share {share})" if share else ""))
        fig.suptitle(literal(f"{model}: weight of each input per matrix"))
        return to_png(fig)
