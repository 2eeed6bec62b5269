"""Measure a report as a reader's browser shows it: headless Chromium at 1400x900, nothing fetched.

    from tests.reports.browser import measure
    m = measure(report["html"])                # needs /usr/bin/chromium (apt-get install chromium)
    m["decision_bottom"] <= 900                # the verdict block is on the first screen
    m["screens"], m["min_figure_text_px"]      # page height in screens; smallest figure text as shown (px)

    .venv/bin/python -m tests.reports.browser runs/.../report.html    # the same, printed as JSON

The report has no scripts and its Content-Security-Policy forbids them, so a temporary *copy* is
measured: the same page with a policy that also allows inline scripts (still nothing but data:
images, so nothing is fetched) and one appended script that writes the measurements as JSON into
`<pre id="fuseval-measure">`. Chromium lays the copy out at the window size, runs the script on load,
and `--dump-dom` hands back the document, from which the JSON is read. Figure text is the size
recorded in each PNG (`reports.figures.min_text_px`, in the PNG's own pixels) scaled by the width the
page shows the image at over its natural width. Images inside closed `<details>` are measured as they
show once opened (all `<details>` are opened after the page height is taken).
"""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from reports.figures import min_text_px

CHROMIUM = "/usr/bin/chromium"
MARKER = "fuseval-measure"
PNG_URI = "data:image/png;base64,"
# default-src 'none' still blocks every fetch; only inline scripts are added to the report's own policy
POLICY = ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
          "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">")
_CSP = re.compile(r"<meta\b[^>]*http-equiv\s*=\s*[\"']?content-security-policy[^>]*>", re.I)
SCRIPT = """<script>
window.addEventListener("load", function () {
  var root = document.documentElement;
  var decision = document.getElementById("decision");
  var out = {viewport: {width: window.innerWidth, height: window.innerHeight, client_width: root.clientWidth},
             page_height: root.scrollHeight,
             decision_bottom: decision ? decision.getBoundingClientRect().bottom + window.scrollY : null};
  var closed = Array.prototype.map.call(document.images, function (img) {
    return !!img.closest("details:not([open])");
  });
  Array.prototype.forEach.call(document.querySelectorAll("details"), function (d) { d.open = true; });
  out.images = Array.prototype.map.call(document.images, function (img, i) {
    var box = img.getBoundingClientRect();
    return {index: i, alt: img.alt, client_width: img.clientWidth, client_height: img.clientHeight,
            natural_width: img.naturalWidth, natural_height: img.naturalHeight, top: box.top + window.scrollY,
            in_closed_details: closed[i], src_head: (img.getAttribute("src") || "").slice(0, 96)};
  });
  var pre = document.createElement("pre");
  pre.id = "MARKER";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>""".replace("MARKER", MARKER)


class _Images(HTMLParser):
    """The src of every <img>, in document order (the order of document.images)."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")


def instrumented(page: str) -> str:
    """The page with a policy that allows inline scripts and the measuring script appended."""
    page, n = _CSP.subn(POLICY, page)
    if not n:
        page = re.sub(r"<head\b[^>]*>", lambda m: m.group(0) + POLICY, page, count=1, flags=re.I)
    at = page.lower().rfind("</body>")
    return page + SCRIPT if at < 0 else page[:at] + SCRIPT + page[at:]


def dump_dom(url: str, width: int, height: int, profile: Path, timeout: float = 120.0) -> str:
    """The document as headless Chromium leaves it after load, laid out in a width x height window."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--force-device-scale-factor=1", f"--user-data-dir={profile}",
            f"--window-size={width},{height}", "--virtual-time-budget=10000", "--dump-dom", url]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def _figure_text(srcs: list[str], images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each image's smallest text as shown: its PNG's recorded size x shown width / natural width."""
    for img in images:
        src = srcs[img["index"]] if img["index"] < len(srcs) else ""
        if not src.startswith(img["src_head"]):
            raise RuntimeError(f"image {img['index']}: the page's images and the measured ones differ")
        native = None
        if src.startswith(PNG_URI):
            try:
                native = min_text_px(base64.b64decode(src[len(PNG_URI):]))
            except ValueError:
                native = None  # a PNG not made by reports.figures: nothing recorded
        img["min_text_px_native"] = native
        shown = native is not None and img["natural_width"] > 0
        img["min_text_px"] = native * img["client_width"] / img["natural_width"] if shown else None
        del img["src_head"]
    return images


def measure(html_path: Path, width: int = 1400, height: int = 900) -> dict[str, Any]:
    """Page height (px and screens), bottom of #decision and the smallest figure text as a browser shows them."""
    page = Path(html_path).read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(page)
    with tempfile.TemporaryDirectory(prefix="fuseval-measure-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(instrumented(page), encoding="utf-8")
        dom = dump_dom(copy.as_uri(), width, height, Path(tmp) / "profile")
    found = re.search(f'<pre id="{MARKER}">(.*?)</pre>', dom, re.S)
    if not found:
        raise RuntimeError("the measuring script left no result: did the page load? (chromium's DOM dump has no "
                           f"<pre id={MARKER!r}>)")
    out = json.loads(html.unescape(found.group(1)))
    figures = _figure_text(parser.srcs, out.pop("images"))
    sizes = [f["min_text_px"] for f in figures if f["min_text_px"] is not None]
    return {"width": width, "height": height, **out, "screens": out["page_height"] / height,
            "min_figure_text_px": min(sizes, default=None), "figures": figures,
            "unmeasured_figures": sum(f["min_text_px"] is None for f in figures)}


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1])), indent=1))
