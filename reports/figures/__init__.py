"""The report's figures: each function takes plain tables and returns PNG bytes, or None if nothing to draw.

    styles = model_styles(data.models)                      # one colour per recipe, one marker per seed
    png = scores_figure(data.scores.query("bench == 'zoo' and judge == 'llm'"), styles=styles)
    png = forest_figure(overall_diffs_against_pivot, margin=0.25, styles=styles, verdicts={"fused": "improved"})
    min_text_px(png)                                        # its smallest text, in the PNG's own pixels

- `canvas`: figures sized for the page (at most PAGE_PX = 1170 px wide at 100 dpi, text >= 10 pt), PNG bytes
  with the smallest text size recorded in the chunk `fuseval:min_text_px`;
- `styles`: the recipe palette and seed markers, verdict colours, fixed or symmetric colour scales;
- `plots`: scores per category, forest plots with margin band and verdicts, seeds, nightly trends;
- `heatmaps`: ablation grids and merge weights.
"""

from reports.figures.canvas import DPI, PAGE_PX, TEXT_KEY, min_text_px, png_size
from reports.figures.heatmaps import MATRIX_ORDER, ablation_figure, grid_axes, merge_weights_figure, tensor_cell
from reports.figures.plots import forest_figure, scores_figure, seed_figure, trend_figure
from reports.figures.styles import MARKERS, PALETTE, VERDICT_COLORS, diff_norm, model_styles, weight_norm, width_norm

__all__ = ["DPI", "MARKERS", "MATRIX_ORDER", "PAGE_PX", "PALETTE", "TEXT_KEY", "VERDICT_COLORS", "ablation_figure",
           "diff_norm", "forest_figure", "grid_axes", "merge_weights_figure", "min_text_px", "model_styles",
           "png_size", "scores_figure", "seed_figure", "tensor_cell", "trend_figure", "weight_norm", "width_norm"]
