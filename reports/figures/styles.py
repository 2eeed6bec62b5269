"""How figures tell models apart, and the colour scales of their heatmaps.

    styles = model_styles(data.models)       # {"pivot": ("#0072B2", "o"), "fused-varm@s1": ("#E69F00", "s"), ...}
    colour, marker = styles["fused-varm@s1"]

A recipe (a model's `group`: one fuse or merge configuration) has one colour in every figure; the
training seeds of one recipe share it and differ by marker. The palette starts with Okabe & Ito's
colour-blind-safe set (yellow left out: too faint on white) and goes on with 13 colours picked
greedily for the largest CIE-Lab distance to those before; any two of the 20 are at least 26 ΔE76
apart. Past 20 recipes, colours come from golden-ratio hue steps.

Heatmap scales are fixed or symmetric, never min..max of the data, which would stretch noise (widths
of 0.17 to 0.19) over the whole colour map: differences are symmetric around 0 and reach the largest
interval end, interval widths start at 0, merge weights span 0..1 with white at the equal share.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Iterator
from itertools import count
from typing import Any

import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm

PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",   # Okabe & Ito
           "#000080", "#8DB600", "#C2B280", "#5C3C00", "#FF1493", "#800000", "#F99379", "#005F5F", "#4B0055",
           "#4DAF4A", "#E41A1C", "#808000", "#882255"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]  # by the seed's rank within its recipe
# gate verdicts: the word is always written out, so the colour only repeats it
VERDICT_COLORS = {"improved": "#1A7F37", "equivalent": "#0B5CAD", "regressed": "#B3261E", "inconclusive": "#6E6E6E"}
MARGIN_COLOR = "#FFD966"
Style = tuple[str, str]


def colour(i: int) -> str:
    """The i-th recipe colour: the palette, then golden-ratio hue steps at two lightnesses."""
    if i < len(PALETTE):
        return PALETTE[i]
    k = i - len(PALETTE)
    r, g, b = colorsys.hls_to_rgb((0.11 + 0.618034 * k) % 1.0, 0.35 if k % 2 else 0.55, 0.75)
    return f"#{round(255 * r):02X}{round(255 * g):02X}{round(255 * b):02X}"


def _seed_key(seed: Any) -> tuple:
    """No seed first, then numbers in order, then anything else as text."""
    numeric = isinstance(seed, (int, float)) and not isinstance(seed, bool)
    return seed is not None, not numeric, seed if numeric else str(seed)


def model_styles(models: dict[str, dict[str, Any]]) -> dict[str, Style]:
    """Model -> (colour, marker): one colour per recipe (its `group`, else its name), one marker per seed in it."""
    seeds: dict[str, set] = {}
    for name, info in models.items():
        seeds.setdefault(str((info or {}).get("group") or name), set()).add((info or {}).get("seed"))
    colours = {recipe: colour(i) for i, recipe in enumerate(seeds)}
    ranks = {recipe: sorted(s, key=_seed_key) for recipe, s in seeds.items()}
    out = {}
    for name, info in models.items():
        recipe = str((info or {}).get("group") or name)
        rank = ranks[recipe].index((info or {}).get("seed"))
        out[name] = (colours[recipe], MARKERS[rank % len(MARKERS)])
    return out


def _free_colours(used: set[str]) -> Iterator[str]:
    return (c for c in (colour(i) for i in count()) if c not in used)


def styles_for(names: Iterable[object], styles: dict[str, Style] | None) -> dict[str, Style]:
    """`styles` for every name in `names`: those it lacks get a colour of their own, unused by the rest."""
    out = dict(styles or {})
    missing = [str(n) for n in dict.fromkeys(names) if str(n) not in out]
    free = _free_colours({c for c, _ in out.values()})
    out.update({name: (next(free), MARKERS[0]) for name in missing})
    return out


def _finite(values: np.ndarray | Iterable[float]) -> np.ndarray:
    a = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float).ravel()
    return a[np.isfinite(a)]


def diff_norm(values: np.ndarray, margin: float | None = None) -> Normalize:
    """A difference scale symmetric around 0 out to the largest |value| (pass the interval ends) or the margin."""
    a = np.abs(_finite(values))
    lim = max(float(a.max()) if a.size else 0.0, float(margin) if margin and np.isfinite(margin) else 0.0)
    lim = lim if lim > 0 else 1.0
    return Normalize(-lim, lim)


def width_norm(values: np.ndarray) -> Normalize:
    """An interval-width scale from 0 to the widest interval: equal widths look equal, not like a gradient."""
    a = _finite(values)
    top = float(a.max()) if a.size else 0.0
    return Normalize(0.0, top if top > 0 else 1.0)


def weight_norm(values: np.ndarray, inputs: int) -> Normalize:
    """Merge weights on 0..1 (wider only if a weight falls outside), centred on the equal share 1/inputs."""
    a = _finite(values)
    lo = min(0.0, float(a.min())) if a.size else 0.0
    hi = max(1.0, float(a.max())) if a.size else 1.0
    centre = 1.0 / inputs if inputs > 1 else (lo + hi) / 2
    return TwoSlopeNorm(centre, lo, hi)
