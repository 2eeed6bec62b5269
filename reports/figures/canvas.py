"""Figures sized for the report's page: a fresh Agg canvas, fonts readable where the page shows them, PNG bytes.

    with figure(8.0, 4.0) as fig:
        ax = fig.add_subplot()
        ...
        png = to_png(fig)          # records its smallest text in the chunk `fuseval:min_text_px`
    min_text_px(png)               # 13.89: 10 pt at 100 dpi

The report's content column is about 1170 px wide (a 1400x900 window). A figure is drawn at 100 dpi no
wider than that column, so the browser shows it at its natural size and never shrinks its text; every
text is at least 10 pt, i.e. 13.9 px, which leaves room for a narrower column (down to 72% of the
natural width) before any text drops under 10 px. `to_png` checks the width after `bbox_inches="tight"`
and lowers the dpi if a figure still came out wider, so the recorded size is always what the PNG holds.
"""

from __future__ import annotations

import io
import math
import struct
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from reports.data import ALL

DPI = 100
PAGE_PX = 1170           # the report's content column in a 1400x900 window
MAX_WIDTH_IN = 11.4      # the widest figure we lay out: 1140 px plus the 0.1 in tight-bbox pad each side
PAD_IN = 0.1             # matplotlib's default pad around a tight bounding box
TEXT_KEY = "fuseval:min_text_px"
# 10 pt is the smallest text anywhere (ticks, legends, annotations); titles are a little larger.
RC: dict[str, Any] = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 10,
                      "ytick.labelsize": 10, "legend.fontsize": 10, "legend.title_fontsize": 10,
                      "figure.titlesize": 12, "figure.labelsize": 10}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextmanager
def figure(width: float, height: float) -> Iterator[Figure]:
    """A fresh figure (inches) on its own Agg canvas at the report's font sizes, cleared on exit.

    No pyplot, so no global figure registry and no backend switch leak into the caller's process. The
    font sizes are set with rc_context for the figure's whole life: tick labels are made lazily, at draw.
    """
    with mpl.rc_context(RC):
        fig = Figure(figsize=(min(width, MAX_WIDTH_IN), height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        try:
            yield fig
        finally:
            fig.clear()


def visible_texts(artist: Artist) -> Iterator[Text]:
    """Every non-empty text under `artist` whose ancestors are all visible."""
    if not artist.get_visible():
        return
    if isinstance(artist, Text) and artist.get_text().strip():
        yield artist
    for child in artist.get_children():
        yield from visible_texts(child)


def _px(pt: float, dpi: float) -> str:
    """Points as pixels at `dpi`, rounded down to 0.01 so a check against 10 px never passes by rounding."""
    return f"{math.floor(pt * dpi / 72 * 100) / 100:.2f}"


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, at most PAGE_PX wide, with its smallest text size (px) in a text chunk."""
    fig.draw_without_rendering()  # lays out and makes the ticks, so every text that will show exists
    smallest_pt = min((float(t.get_fontsize()) for t in visible_texts(fig)), default=float(RC["font.size"]))
    dpi = float(DPI)
    for _ in range(5):  # text extents round to whole pixels, so a lower dpi may need a second try
        buf = io.BytesIO()
        # "Software": None: no version stamp, so the same figure gives the same bytes
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=PAD_IN,
                    metadata={"Software": None, TEXT_KEY: _px(smallest_pt, dpi)})
        width, _ = png_size(buf.getvalue())
        if width <= PAGE_PX:
            break
        dpi = math.floor(100 * dpi * (PAGE_PX - 1) / width) / 100
    return buf.getvalue()


def png_chunks(png: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(chunk type, data) of each chunk of a PNG file."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file (its first 8 bytes are not the PNG signature)")
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        yield kind, png[pos + 8:pos + 8 + length]
        pos += 12 + length  # length, type, data, CRC


def min_text_px(png: bytes) -> float:
    """The smallest text in a figure's PNG, in pixels of the PNG itself (its `fuseval:min_text_px` chunk)."""
    for kind, data in png_chunks(png):
        key, _, value = data.partition(b"\0")
        if kind == b"tEXt" and key == TEXT_KEY.encode():
            return float(value)
    raise ValueError(f"this PNG has no {TEXT_KEY!r} text chunk: it was not made by reports.figures")


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG's header chunk."""
    kind, data = next(png_chunks(png))
    if kind != b"IHDR":
        raise ValueError("PNG without its IHDR header chunk first")
    width, height = struct.unpack(">II", data[:8])
    return int(width), int(height)


def literal(text: object) -> str:
    """Model text as a literal label: '$' would start mathtext, a leading '_' hides a legend entry."""
    s = str(text).replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def wrapped(text: object, width_in: float, pt: float = 11.0) -> str:
    """A literal label broken into lines that fit `width_in` inches at `pt` points (a panel's title)."""
    return literal("\n".join(textwrap.wrap(str(text), max(8, int(width_in / (0.6 * pt / 72)))) or [""]))


def label_width(labels: Sequence[object], pt: float = 10.0) -> float:
    """About how many inches the longest label takes at `pt` points (DejaVu Sans: ~0.6 em a character)."""
    longest = max((len(str(s)) for s in labels), default=0)
    return 0.6 * pt / 72 * longest + 0.25


def yerr(mean: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Asymmetric error-bar lengths (never negative, NaN where the interval is unknown)."""
    return np.vstack([np.clip(mean - low, 0, None), np.clip(high - mean, 0, None)])


def arrays(df: pd.DataFrame, mean: str = "diff") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The estimate, low and high columns as float arrays (NaN where a value is missing)."""
    m, lo, hi = (pd.to_numeric(df[c], errors="coerce").to_numpy(float) for c in (mean, "low", "high"))
    return m, lo, hi


def categories(cats: Sequence[object]) -> list[str]:
    """Category order: 'all' first, then the rest sorted."""
    names = {str(c) for c in cats}
    return ([ALL] if ALL in names else []) + sorted(names - {ALL})


def facet_grid(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, columns) for n panels, at most max_cols a row, rows filled evenly (8 in 4 -> 2 x 4, 5 -> 2 x 3)."""
    rows = -(-n // max(max_cols, 1))
    return rows, -(-n // rows)
