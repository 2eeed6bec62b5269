"""The report's figures are readable where the page shows them, tell recipes apart and do not invent patterns.

    .venv/bin/python -m pytest -q tests/reports/test_figures.py

Data are shaped like the demo's: 13 models (pivot, control and five recipes, two training seeds
each), eight categories, a 2x2 ablation grid per seed, merge weights of a 4-layer model.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reports import figures
from reports.data import ALL, DIFF_COLUMNS, HISTORY_COLUMNS, SCORE_COLUMNS, SEED_COLUMNS
from reports.figures.canvas import figure, to_png
from reports.figures.styles import MARGIN_COLOR, styles_for
from tests.reports.browser import CHROMIUM, measure

COLUMN_PX = 1170  # the report's content column in a 1400x900 window
RECIPES = ["fused-varm", "fused-ties-d0.3", "fused-ties-d0.7", "fused-dare_ties-d0.3", "fused-dare_ties-d0.7"]
CATEGORIES = [ALL, "arithmetic", "chat", "code", "dates", "lists", "records", "units"]
KINDS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
         "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"]
VERDICTS = ["improved", "equivalent", "regressed", "inconclusive"]
FIGURES = ["scores", "forest", "forest, no gate", "seeds", "ablation seed 0", "ablation seed 1", "ablation, one axis",
           "trend", "merge weights"]


def demo_models() -> dict[str, dict]:
    models = {"pivot": {"role": "baseline", "group": "pivot", "seed": None}}
    for group in ["control", *RECIPES]:
        for seed in (0, 1):
            models[f"{group}@s{seed}"] = {"role": "baseline" if group == "control" else "candidate",
                                          "group": group, "seed": seed}
    return models


def candidates() -> list[str]:
    return [m for m, v in demo_models().items() if v["role"] == "candidate"]


def scores_frame(cats: list[str] = CATEGORIES) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i, model in enumerate(demo_models()):
        for cat in cats:
            mean = 0.35 + 0.03 * i + rng.normal(0, 0.05)
            rows.append(["zoo", "exact", model, cat, mean, mean - 0.11, mean + 0.1, 0.05, 40, 40, 0])
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def diffs_frame() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame([["zoo", "exact", m, "pivot", ALL, d, d - 0.1, d + 0.09, 0.05, 0.14, 40, 40, 0]
                         for m, d in zip(candidates(), rng.normal(0.02, 0.06, len(candidates())))],
                        columns=DIFF_COLUMNS)


def seeds_frame() -> pd.DataFrame:
    models = demo_models()
    return pd.DataFrame([[models[r.model]["group"], models[r.model]["seed"], r.model, "zoo", "exact", "pivot",
                          r.diff, r.low, r.high] for r in diffs_frame().itertuples()], columns=SEED_COLUMNS)


def grid_frame(seed: int) -> pd.DataFrame:
    d = diffs_frame().set_index("model")
    cells = [("ties", 0.3), ("ties", 0.7), ("dare_ties", 0.3), ("dare_ties", 0.7)]
    rows = [[m, dens, f"fused-{m}-d{dens}@s{seed}", "zoo", "exact", "pivot",
             *d.loc[f"fused-{m}-d{dens}@s{seed}", ["diff", "low", "high"]]] for m, dens in cells]
    return pd.DataFrame(rows, columns=["method", "density", "model", "bench", "judge", "baseline", "diff", "low",
                                       "high"])


def history_frame() -> pd.DataFrame:
    return pd.DataFrame([[f"night-{r}", 1_714_560_000 + 86_400 * r, m, "zoo", "exact", 0.4 + 0.02 * i + 0.01 * r,
                          0.33 + 0.02 * i, 0.47 + 0.02 * i + 0.02 * r] for r in range(3)
                         for i, m in enumerate(demo_models())], columns=HISTORY_COLUMNS)


def merge_entry(layers: int = 4, inputs: int = 2) -> dict:
    rng = np.random.default_rng(3)
    weights = {f"model.layers.{layer}.{kind}.weight": list(rng.dirichlet(np.full(inputs, 40.0)))
               for layer in range(layers) for kind in KINDS}
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        weights[name] = [1 / inputs] * inputs
    return {"inputs": [f"target-source_{i}" for i in range(inputs)], "weights": weights}


def demo_figures() -> dict[str, bytes | None]:
    styles = figures.model_styles(demo_models())
    verdicts = dict(zip(candidates(), itertools.cycle(VERDICTS)))
    title = "zoo · judge exact · vs pivot"
    grid = grid_frame(0)
    return {
        "scores": figures.scores_figure(scores_frame(), styles=styles),
        "forest": figures.forest_figure(diffs_frame(), margin=0.05, title=title, styles=styles, verdicts=verdicts),
        "forest, no gate": figures.forest_figure(diffs_frame(), title=title, styles=styles),
        "seeds": figures.seed_figure(seeds_frame(), title=title, styles=styles, margin=0.05),
        "ablation seed 0": figures.ablation_figure(grid, "method x density · seed 0", styles=styles),
        "ablation seed 1": figures.ablation_figure(grid_frame(1), "method x density · seed 1", styles=styles),
        "ablation, one axis": figures.ablation_figure(grid[grid["method"] == "ties"].drop(columns="method"),
                                                      "ties", styles=styles, margin=0.05),
        "trend": figures.trend_figure(history_frame(), styles=styles),
        "merge weights": figures.merge_weights_figure("fused-varm@s0", merge_entry()),
    }


@pytest.fixture(scope="module")
def pngs() -> dict[str, bytes | None]:
    return demo_figures()


def shown_text_px(png: bytes) -> float:
    """The smallest text as a page with a COLUMN_PX column shows it (max-width: 100%, never enlarged)."""
    width, _ = Image.open(io.BytesIO(png)).size
    return figures.min_text_px(png) * min(1.0, COLUMN_PX / width)


def pixels_near(png: bytes, colour: str, tol: float = 8.0) -> int:
    """How many pixels are within `tol` (RGB distance) of `colour`."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)
    return int((np.linalg.norm(rgb - target, axis=-1) <= tol).sum())


def over_white(colour: str, alpha: float) -> str:
    rgb = [int(colour[i:i + 2], 16) * alpha + 255 * (1 - alpha) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c):02X}" for c in rgb)


@pytest.mark.parametrize("name", FIGURES)
def test_demo_figures_are_readable_in_the_page_column(pngs, name):
    png = pngs[name]
    assert png is not None and png.startswith(b"\x89PNG")
    width, height = Image.open(io.BytesIO(png)).size
    assert width <= COLUMN_PX, f"{name}: {width} px wide, the browser would shrink it"
    assert height <= 900, f"{name}: {height} px tall, more than a screen"
    assert shown_text_px(png) >= 10, f"{name}: smallest text {shown_text_px(png):.1f} px as shown"


@pytest.mark.parametrize("case", ["20 categories", "3 categories", "merge weights, 32 layers x 3 inputs",
                                  "merge weights, 5 inputs"])
def test_wide_content_grows_in_height_not_width(case):
    if "categories" in case:
        n = int(case.split()[0])
        scores = scores_frame([ALL, *[f"category {i}" for i in range(n - 1)]])
        png = figures.scores_figure(scores[scores["model"].isin(["pivot", "control@s0", "fused-dare_ties-d0.7@s1"])])
    else:
        layers, inputs = (32, 3) if "32" in case else (4, 5)
        png = figures.merge_weights_figure("m", merge_entry(layers, inputs))
    width, _ = figures.png_size(png)
    assert width <= COLUMN_PX and shown_text_px(png) >= 10


def test_min_text_is_recorded_from_the_smallest_visible_text():
    with figure(4, 2) as fig:
        fig.text(0.1, 0.5, "seven points", fontsize=7)
        fig.text(0.5, 0.5, "hidden", fontsize=4, visible=False)
        fig.text(0.5, 0.2, "", fontsize=3)  # empty: draws nothing
        png = to_png(fig)
    assert figures.min_text_px(png) == pytest.approx(7 * 100 / 72, abs=0.01)  # pt x dpi / 72
    image = Image.open(io.BytesIO(png))  # PIL reads the same chunk; bytes stay free of a version stamp
    assert float(image.text["fuseval:min_text_px"]) == pytest.approx(9.72, abs=0.01)
    assert "Software" not in image.text and figures.png_size(png) == image.size
    with pytest.raises(ValueError, match="not made by reports.figures"):
        figures.min_text_px(_plain_png())


def _plain_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buf, format="png")
    return buf.getvalue()


def test_a_figure_too_wide_for_the_column_is_saved_smaller_and_says_so():
    with figure(11.4, 2) as fig:
        fig.set_layout_engine("none")  # or the layout would make room for the text inside the figure
        ax = fig.add_subplot()
        ax.text(1.02, 0.5, "sticks out " * 6, transform=ax.transAxes)  # past the figure's right edge
        png = to_png(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    natural, _ = Image.open(buf).size
    width, _ = figures.png_size(png)
    assert natural > COLUMN_PX >= width >= COLUMN_PX - 3
    dpi, _ = Image.open(io.BytesIO(png)).info["dpi"]  # the PNG's pHYs chunk
    assert dpi < 100 and figures.min_text_px(png) == pytest.approx(10 * dpi / 72, abs=0.01)  # 10 pt at that dpi
    assert figures.min_text_px(png) == pytest.approx(10 * 100 / 72 * width / natural, rel=0.05)


def test_model_styles_one_colour_per_recipe_one_marker_per_seed():
    models = demo_models()
    styles = figures.model_styles(models)
    assert set(styles) == set(models)
    by_recipe: dict[str, set] = {}
    for name, info in models.items():
        by_recipe.setdefault(info["group"], set()).add(styles[name])
    colours = {group: {c for c, _ in s} for group, s in by_recipe.items()}
    assert all(len(c) == 1 for c in colours.values())                  # seeds share their recipe's colour
    assert len({next(iter(c)) for c in colours.values()}) == len(by_recipe)  # no two recipes share one
    for group, s in by_recipe.items():
        assert len({m for _, m in s}) == len(s), group                  # seeds differ by marker
    assert styles["fused-varm@s0"][1] != styles["fused-varm@s1"][1]
    assert figures.model_styles(demo_models()) == styles                 # stable


def test_twenty_five_recipes_get_distinct_colours_and_the_palette_is_far_apart():
    styles = figures.model_styles({f"recipe-{i}@s{s}": {"group": f"recipe-{i}", "seed": s}
                                   for i in range(25) for s in (0, 1, 2)})
    assert len({c for c, _ in styles.values()}) == 25
    assert len(figures.PALETTE) >= 20
    labs = [_lab(c) for c in figures.PALETTE]
    assert min(math.dist(a, b) for a, b in itertools.combinations(labs, 2)) >= 25  # CIE76 ΔE
    assert all(lab[0] < 80 for lab in labs)  # none too light to see on white


def _lab(colour: str) -> tuple[float, float, float]:
    """sRGB hex to CIE L*a*b* (D65), from the standard formulas."""
    c = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c)
    xyz = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b, \
        (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
    f = [t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29 for t in xyz]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def test_models_missing_from_the_styles_get_colours_of_their_own():
    styles = styles_for(["a", "b", "c"], {"a": (figures.PALETTE[1], "s")})
    assert styles["a"] == (figures.PALETTE[1], "s")
    assert len({styles[m][0] for m in "abc"}) == 3


def test_every_figure_draws_each_recipe_in_its_colour(pngs):
    styles = figures.model_styles(demo_models())
    shown = {"scores": demo_models(), "trend": demo_models(), "forest": candidates(), "seeds": candidates()}
    for name, models in shown.items():
        for model in models:
            assert pixels_near(pngs[name], styles[model][0], tol=2) > 20, (name, model)


def test_forest_draws_the_margin_band_and_marks_verdicts(pngs):
    band = over_white(MARGIN_COLOR, 0.45)
    assert pixels_near(pngs["forest"], band) > 5_000           # a band across every row, not just its legend
    assert pixels_near(pngs["forest, no gate"], band) == 0
    assert pixels_near(pngs["ablation, one axis"], band) > 2_000

    def words(png: bytes, verdict: str) -> int:  # pixels of a verdict's colour beyond a forest without verdicts
        return pixels_near(png, figures.VERDICT_COLORS[verdict]) - pixels_near(plain, figures.VERDICT_COLORS[verdict])

    plain = figures.forest_figure(diffs_frame(), margin=0.05)
    for verdict in VERDICTS:
        assert words(pngs["forest"], verdict) > 30, verdict
    one = figures.forest_figure(diffs_frame(), margin=0.05, verdicts={"fused-varm@s0": "regressed"})
    assert words(one, "regressed") > 30 and words(one, "improved") <= 0


def test_seed_figure_has_a_title():
    with_title = figures.seed_figure(seeds_frame(), title="zoo · vs pivot")
    assert with_title.startswith(b"\x89PNG") and with_title != figures.seed_figure(seeds_frame())


def test_colour_scales_are_symmetric_or_fixed():
    norm = figures.diff_norm(np.array([0.03, -0.01, np.nan, 0.12, -0.08]))
    assert (norm.vmin, norm.vmax) == (-0.12, 0.12) and norm(0.0) == 0.5
    norm = figures.diff_norm(np.array([0.01, -0.02]), margin=0.25)
    assert (norm.vmin, norm.vmax) == (-0.25, 0.25)
    assert (figures.diff_norm(np.array([0.0, np.nan])).vmin, figures.diff_norm(np.array([])).vmax) == (-1.0, 1.0)
    widths = figures.width_norm(np.array([0.17, 0.18, 0.19]))
    assert widths.vmin == 0.0 and widths.vmax == 0.19
    assert widths(0.19) - widths(0.17) < 0.11  # noise between equal-looking widths stays a small step
    weights = figures.weight_norm(np.array([0.46, 0.54]), inputs=2)
    assert (weights.vmin, weights.vcenter, weights.vmax) == (0.0, 0.5, 1.0)
    assert abs(weights(0.54) - weights(0.46)) < 0.1
    wide = figures.weight_norm(np.array([-0.2, 1.3]), inputs=4)
    assert (wide.vmin, wide.vcenter, wide.vmax) == (-0.2, 0.25, 1.3)


def test_ablation_heatmap_colours_do_not_stretch_noise():
    """Equal-looking widths (0.17 to 0.19) look alike: their cells differ by little, not by the whole map."""
    grid = grid_frame(0).assign(low=lambda d: d["diff"] - 0.09)
    grid["high"] = grid["diff"] + [0.08, 0.085, 0.095, 0.10]
    png = figures.ablation_figure(grid, "g")
    # the interval-width panel (Greys from 0): every cell is dark; none is white or mid-grey
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float).mean(axis=-1)
    dark_cells = (rgb < 60).sum()
    assert dark_cells > 4 * 30 * 30


@pytest.mark.skipif(not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None,
                    reason=f"{CHROMIUM} is not installed (apt-get install chromium): no browser to measure with")
def test_browser_measures_figure_text_as_shown(pngs, tmp_path):
    png = pngs["forest"]
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    natural, _ = figures.png_size(png)
    page = tmp_path / "page.html"
    page.write_text(f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<style>body {{ margin: 0 auto; max-width: {COLUMN_PX}px; }} img {{ max-width: 100%; height: auto; }}
figure {{ margin: 0; }} .half {{ width: 400px; }}</style></head><body>
<section id="decision" style="height: 300px">fused-varm vs pivot: improved</section>
<figure><img src="{uri}" alt="forest"></figure>
<figure class="half"><img src="{uri}" alt="forest, squeezed"></figure>
<details><summary>more</summary><figure><img src="{uri}" alt="folded"></figure></details>
<div style="height: 2000px"></div></body></html>""")
    m = measure(page)
    assert m["decision_bottom"] == pytest.approx(300, abs=1)
    height = figures.png_size(png)[1]
    assert 300 + height + height * 400 / natural + 2000 <= m["page_height"] <= 300 + 2 * height + 2100
    assert m["screens"] == pytest.approx(m["page_height"] / 900)
    full, squeezed, folded = m["figures"]
    assert full["client_width"] == natural and full["min_text_px"] == pytest.approx(figures.min_text_px(png))
    assert squeezed["client_width"] == 400
    assert squeezed["min_text_px"] == pytest.approx(figures.min_text_px(png) * 400 / natural)
    assert folded["in_closed_details"] and folded["client_width"] == natural  # measured as shown once opened
    assert m["min_figure_text_px"] == pytest.approx(squeezed["min_text_px"]) and m["unmeasured_figures"] == 0
    assert "<script" not in page.read_text()  # the page itself is left as it was


def test_the_same_figure_gives_the_same_bytes(pngs):
    assert figures.scores_figure(scores_frame(), styles=figures.model_styles(demo_models())) == pngs["scores"]
