"""Write one run's report: `figures/*.png`, a self-contained `report.html` and a `report.md` summary.

    from reports.render import render_report
    paths = render_report(data, Path("runs/demo/report"))   # {"html": ..., "md": ..., "figures": ...}

The page decides first (reports/decision.py: the answer, per-recipe verdicts, ranking, gate), then
shows what a reader needs to act (reports/sections.py), then folds the detail away.

The runner computes every number (reports/data.py); this module only words and lays them out, as
estimates with intervals (DESIGN.md section 3.5). Model text is untrusted: the HTML template is
autoescaped and the Markdown template escapes every value it prints, so an answer containing
`<script>` shows as text. Every file is written to a temporary file beside it and renamed into place.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2

from fusion.common.files import atomic_write_bytes
from reports import sections
from reports.data import ReportData
from reports.decision import decision_lines, decision_section, headline, verdict_figures
from reports.fmt import fmt_level
from reports.tables import EMPTY, LEADS, Figures

FORMATS = ("html", "md")
TEMPLATES = Path(__file__).resolve().parent / "templates"
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
    figs = Figures()
    ctx = {"title": data.title, "level": fmt_level(data.level), "decision": decision_section(data),
           "headline": headline(data) if data.decision is None else [], "empty_benches": data.empty_benches,
           "verdict_figures": verdict_figures(data, figs), "scores": sections._scores(data, figs),
           "diffs": sections._diffs(data, figs), "seeds": sections._seeds(data, figs),
           "ablations": sections._ablations(data, figs), "metrics": sections._metrics(data),
           "noise": sections._noise(data),
           "method": sections.method_section(data), "run": sections.run_facts(data),
           "trends": sections._trends(data, figs), "merge": sections._merge(data, figs),
           "missing": sections._missing(data), "examples": sections._examples(data), "empty": EMPTY,
           "leads": {k: v.format(level=fmt_level(data.level)) for k, v in LEADS.items()}}
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


__all__ = ["FORMATS", "build_context", "decision_lines", "headline", "render_report"]
