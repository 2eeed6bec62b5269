"""`fuseval demo` / `make demo`: the whole job on the embedded tiny world, on CPU, with no downloads.

1. builds the tiny world (a pivot and two sources with different tokenizers and architectures,
   trained on synthetic chat domains; cached under <workspace>/world);
2. runs the suite benchmarks/suites/demo.yml: FuseChat's two stages (targets, then the VaRM merge),
   the gold-only control, other stage-2 merges as an ablation grid, `--seeds N` training seeds;
   every model served in turn (transformers in process by default), answering the zoo domains
   (programmatic judges) and a few MT-Bench-style questions (the LLM-judge path, with the tiny
   pivot as judge: a pipeline check, labelled so in the report);
3. writes the HTML and Markdown report and prints where it is and the headline comparison.

Everything goes through the store (<workspace>/fuseval.db): a second run reuses every model,
answer and judgment and only re-renders the report.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rich.console import Console
from rich.text import Text

from fusion.common.files import atomic_output_dir
from harness.formats.questions import BENCHMARKS_DIR

SUITE = BENCHMARKS_DIR / "suites" / "demo.yml"


def tiny_judge(world: Path, dest: Path) -> Path:
    """The world's pivot with room for judge prompts (~800 of its character tokens): a judge that cannot grade."""
    if (dest / "config.json").exists():
        return dest
    with atomic_output_dir(dest, force=True) as tmp:
        for f in (world / "pivot").iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        cfg = json.loads((tmp / "config.json").read_text())
        cfg["max_position_embeddings"] = 2048
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
    return dest


def run_demo(workspace: Path, console: Console, backend: str | None = None, seeds: int = 2,
             store: Path | None = None, formats=("html", "md")) -> str:
    """Build the world, run the demo suite, write the report; returns the run id."""
    from fusion import zoo
    from fusion.common.configfile import read_yaml
    from harness.run.session import run_and_report
    from harness.ui import quiet_libraries

    quiet_libraries()
    workspace = Path(workspace)
    console.print(Text.assemble(("fuseval demo", "bold"), f" in {workspace}: the tiny world, fused and merged, "
                                "benchmarked with intervals (CPU, no downloads)"))
    world = zoo.build_world(workspace / "world")
    judge = tiny_judge(world, workspace / "tiny-judge")
    os.environ["FUSEVAL_WORLD"] = str(world.resolve())
    os.environ["FUSEVAL_JUDGE"] = str(judge.resolve())
    data = read_yaml(SUITE)
    data["seeds"] = list(range(seeds))
    if backend:
        data["backend"] = {**data.get("backend", {}), "kind": backend}
    return run_and_report(SUITE, workspace, store or workspace / "fuseval.db", backend, formats, data=data)
