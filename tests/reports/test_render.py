"""The report renderer: every number and name shows, model text is escaped, files are self-contained.

    .venv/bin/python -m pytest -q tests/reports
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from reports.data import ALL, DIFF_COLUMNS, SCORE_COLUMNS, Example, Gate, ReportData
from reports.render import EMPTY, render_report

PNG = b"\x89PNG\r\n\x1a\n"
MODELS = ["pivot", "merged-ties", "fused-sce"]
PAYLOADS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '<iframe src="x">']
ESCAPED = ["&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(1)&gt;", "&lt;iframe src="]


def num(x: float, signed: bool = False) -> str:
    """Two decimals with U+2212, written independently of reports.fmt."""
    return format(x, "+.2f" if signed else ".2f").replace("-", "\u2212")


def interval(low: float, high: float, signed: bool = False) -> str:
    return f"{num(low, signed)} to {num(high, signed)}"


def scores_frame() -> pd.DataFrame:
    rows = []
    for i, model in enumerate(MODELS):
        for j, cat in enumerate([ALL, "writing", "coding"]):
            mean = 6.1 + 0.4 * i - 0.7 * j
            rows.append(["mt", "gpt-judge", model, cat, mean, mean - 0.33 - 0.1 * j, mean + 0.29 + 0.1 * j,
                         0.16, 20 if cat == ALL else 10, 40 if cat == ALL else 20, 1 if i == 2 else 0])
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def diffs_frame() -> pd.DataFrame:
    rows = []
    for model, (d, lo, hi) in {"merged-ties": (0.42, -0.05, 0.90), "fused-sce": (-0.31, -0.83, 0.17)}.items():
        for j, cat in enumerate([ALL, "writing", "coding"]):
            rows.append(["mt", "gpt-judge", model, "pivot", cat, d + 0.11 * j, lo - 0.2 * j, hi + 0.3 * j, 0.24,
                         0.67 + 0.3 * j, 20, 40, 0])
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)


def full_data() -> ReportData:
    seeds = pd.DataFrame([["fuse-sce", s, f"fused-sce-s{s}", "mt", "gpt-judge", "pivot", d, d - 0.46, d + 0.47]
                          for s, d in [(0, -0.31), (1, 0.18)]],
                         columns=["group", "seed", "model", "bench", "judge", "baseline", "diff", "low", "high"])
    grid = pd.DataFrame([[m, dens, f"{m}-{dens}", "mt", "gpt-judge", "pivot", d, d - 0.5, d + 0.44]
                         for (m, dens), d in {("ties", 0.3): 0.21, ("ties", 0.6): 0.37, ("dare", 0.3): -0.12,
                                              ("dare", 0.6): 0.08}.items()],
                        columns=["method", "density", "model", "bench", "judge", "baseline", "diff", "low", "high"])
    history = pd.DataFrame([[f"night-{r}", 1_714_560_000 + 86_400 * r, m, "mt", "gpt-judge", mean, mean - 0.3,
                             mean + 0.3] for r in range(3) for m, mean in [("pivot", 6.0 + 0.05 * r),
                                                                          ("merged-ties", 6.3 + 0.1 * r)]],
                           columns=["run_id", "started", "model", "bench", "judge", "mean", "low", "high"])
    weights = {f"model.layers.{layer}.{part}.weight": [w, 1 - w]
               for layer in (0, 1) for part, w in [("self_attn.q_proj", 0.3 + 0.1 * layer),
                                                   ("self_attn.k_proj", 0.45), ("mlp.down_proj", 0.7 - 0.2 * layer)]}
    weights["model.embed_tokens.weight"] = [0.5, 0.5]
    metrics = pd.DataFrame([["pivot", "arc_easy", "acc", 0.5612, 0.0102, 0.5412, 0.5812],
                            ["merged-ties", "arc_easy", "acc", 0.5838, 0.0101, 0.5640, 0.6036]],
                           columns=["model", "task", "metric", "value", "stderr", "low", "high"])
    examples = [
        Example("mt", 81, "writing", ["Write a poem.", "Now shorter " + PAYLOADS[2]],
                {"pivot": ["Roses\n  are red " + PAYLOADS[0], "Short."],
                 "merged-ties": [PAYLOADS[1], "ok"], "fused-sce": ["x" * 400, PAYLOADS[2]]},
                {"pivot": [7.0, None], "merged-ties": [3.0, 8.5]}),
        Example("mt", "q-2", "coding", ["Reverse a list."],
                {m: [f"```python\n{PAYLOADS[0]}\nxs[::-1]\n```"] for m in MODELS}),
    ]
    gate = Gate("merged-ties", "pivot", "mt", "gpt-judge", "inconclusive", 0.42, 0.03, 0.81, 0.25, 0.90,
                "merged-ties vs pivot: inconclusive — difference +0.42 (90% interval +0.03 to +0.81) "
                "straddles the margin +0.25.")
    return ReportData(
        title="Nightly fuse check", run={"id": "run-7", "suite": "nightly.yml", "backend": "transformers",
                                         "started": 1_714_732_800, "ended": 1_714_736_400, "git_sha": "abc1234"},
        scores=scores_frame(), diffs=diffs_frame(), gates=[gate], seeds=seeds, ablations={"method x density": grid},
        history=history, merge_weights={"fused-sce": {"inputs": ["pivot", "source-a"], "weights": weights}},
        metrics=metrics, examples=examples, judge_notes={"gpt-judge": "Scores move by about 0.2 on re-judging."},
        models={"pivot": {"role": "baseline", "path": "/ckpt/pivot"},
                "merged-ties": {"role": "candidate", "recipe": {"method": "ties", "density": 0.5}},
                "fused-sce": {"role": "candidate", "recipe": "fuse.yml"}})


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, Path]:
    return render_report(full_data(), tmp_path_factory.mktemp("report"))


def expected_strings(data: ReportData) -> list[str]:
    out = [num(r.low) + " to " + num(r.high) for r in data.scores.itertuples()]
    out += [interval(r.low, r.high, signed=True) for r in data.diffs.itertuples()]
    out += [interval(r.low, r.high, signed=True) for r in data.seeds.itertuples()]
    out += [interval(r["low"], r["high"], signed=True) for grid in data.ablations.values() for _, r in grid.iterrows()]
    return out


def test_files_exist_with_every_model_and_interval(report):
    data = full_data()
    html, md = report["html"].read_text(), report["md"].read_text()
    assert report["html"].name == "report.html" and report["md"].name == "report.md"
    names = set(MODELS) | set(data.seeds["model"]) | set(data.ablations["method x density"]["model"])
    for text in (html, md):
        for name in names:
            assert name in text, name
        for s in expected_strings(data):
            assert s in text, s
        assert "0.56 (0.54 to 0.58)" in text  # lm-eval value with its interval
        assert data.gates[0].sentence in text
        assert "Scores move by about 0.2 on re-judging." in text  # the judge's note beside its table
        assert "1 of 121 judgments was missing" in text  # 3 models x 40 judged rows overall, 1 unreadable
        assert "not counted as 0" in text
        assert "minimum detectable effect (MDE)" in text
        assert "significan" not in text.lower() and "p-value" not in text.lower()


def test_sections_in_order(report):
    html = report["html"].read_text()
    heads = re.findall(r"<h2 id=\"(\w+)\"", html)
    assert heads == ["scores", "seeds", "ablations", "metrics", "method", "detail"]  # no noise parts to show
    assert html.index('<section id="decision">') < html.index('<h2 id="scores">')
    for folded in ("run", "trends", "merge", "missing", "examples"):  # the detail, folded
        assert f'<details id="{folded}">' in html


def test_model_text_is_escaped(report):
    html, md = report["html"].read_text(), report["md"].read_text()
    for raw in ("<script", "<img src=x", "<iframe"):
        assert raw not in html and raw not in md
    for escaped in ESCAPED:
        assert escaped in html
    assert "&lt;script&gt;" in md  # shown as text by a Markdown viewer, never run
    assert "white-space: pre-wrap" in html


def test_html_is_self_contained(report):
    html = report["html"].read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert all(v.startswith("data:image/png;base64,") for v in re.findall(r'src="([^"]*)"', html))
    assert all(v.startswith("#") for v in re.findall(r'href="([^"]*)"', html))
    assert "<script" not in html and "<link" not in html


def test_figures_are_pngs_embedded_and_linked(report):
    html, md = report["html"].read_text(), report["md"].read_text()
    files = sorted(report["figures"].glob("*.png"))
    assert len(files) == 6  # scores, forest, seeds, ablation, trend, merge weights
    embedded = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]
    assert sorted(embedded) == sorted(f.read_bytes() for f in files)
    for f in files:
        assert f.read_bytes().startswith(PNG)
        assert f"](figures/{f.name})" in md


def test_second_render_replaces_files(tmp_path):
    first = render_report(full_data(), tmp_path)
    data = full_data()
    data.title, data.merge_weights = "Second run", {}
    second = render_report(data, tmp_path)
    assert first["html"] == second["html"] and "Second run" in second["html"].read_text()
    assert "Second run" in second["md"].read_text()
    assert not list(tmp_path.rglob("*.tmp"))
    figures = sorted(p.name for p in second["figures"].glob("*.png"))
    assert len(figures) == 5 and not any("merge" in name for name in figures)  # the stale figure is gone
    assert EMPTY["merge"] in second["html"].read_text()


def test_empty_sections_say_so(tmp_path):
    data = ReportData(title="Bare run", run={"id": "run-1"}, scores=scores_frame(), diffs=diffs_frame())
    out = render_report(data, tmp_path)
    for text in (out["html"].read_text(), out["md"].read_text()):
        for key in ("seeds", "ablations", "metrics", "trends", "merge", "examples"):
            assert EMPTY[key] in text
        assert "This run has no ablation grid." in text
        # no gate: the headline gives the candidates' overall differences to the first baseline
        assert "merged-ties vs pivot: +0.42 (95% interval −0.05 to +0.90)" in text
        assert "fused-sce vs pivot: −0.31 (95% interval −0.83 to +0.17)" in text
    assert len(list(out["figures"].glob("*.png"))) == 2


def test_only_requested_formats(tmp_path):
    out = render_report(ReportData("t", {}, scores_frame().iloc[:0], diffs_frame().iloc[:0]), tmp_path,
                        formats=("md",))
    assert set(out) == {"md", "figures"} and not (tmp_path / "report.html").exists()
    assert EMPTY["scores"] in out["md"].read_text()
    with pytest.raises(ValueError, match="allowed"):
        render_report(full_data(), tmp_path, formats=("pdf",))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(report, tmp_path):
    base = ["chromium", "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'profile'}"]
    url = report["html"].resolve().as_uri()
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000", url], check=True, timeout=60,
                   capture_output=True)
    assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 20_000
    dom = subprocess.run([*base, "--dump-dom", url], check=True, timeout=60, capture_output=True, text=True).stdout
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) == 6
    assert "<script" not in dom.lower() and "&lt;script&gt;" in dom


def test_tensor_names_map_to_layer_and_matrix():
    from reports.figures import tensor_cell

    assert tensor_cell("model.layers.3.self_attn.q_proj.weight") == (3, "q_proj")
    assert tensor_cell("model.layers.12.mlp.down_proj.weight") == (12, "down_proj")
    assert tensor_cell("model.layers.0.self_attn.k_proj.bias") == (0, "k_proj.bias")
    assert tensor_cell("model.embed_tokens.weight") == ("model.embed_tokens", "whole tensor")
    assert tensor_cell("lm_head.weight") == ("lm_head", "whole tensor")


def test_figures_for_other_shapes_and_odd_names():
    from reports import figures

    grid = full_data().ablations["method x density"]
    one_axis = grid[grid["method"] == "ties"].drop(columns="method")
    assert figures.ablation_figure(one_axis).startswith(PNG)
    assert figures.ablation_figure(grid.assign(weights="0.5,0.5")).startswith(PNG)  # 3 axes: a forest by model
    assert figures.ablation_figure(grid.iloc[:0]) is None
    odd = scores_frame().replace({"model": {"pivot": "$x$", "merged-ties": "_hidden"}})
    assert figures.scores_figure(odd).startswith(PNG)  # '$' is not mathtext, '_' does not hide a legend entry
    history = full_data().history
    assert figures.trend_figure(history[history["run_id"] == "night-0"]) is None
    with pytest.raises(ValueError, match="one weight per input"):
        figures.merge_weights_figure("m", {"inputs": ["a", "b"], "weights": {"model.layers.0.q_proj.weight": [1.0]}})
