"""`fuseval demo` / `make demo`: the whole job on the embedded tiny world, on CPU, with no downloads.

1. runs the positive control first: the known-effect world (its pivot never saw the sources' domains
   and the fusion data's answers there are shuffled, so only the teachers can teach those skills) with
   the suite benchmarks/suites/demo-known-effect.yml, where fused must beat the gold-label control;
2. builds the tiny world (a pivot and two sources with different tokenizers and architectures,
   trained on synthetic chat domains; cached under <workspace>/world) and runs the suite
   benchmarks/suites/demo.yml: FuseChat's two stages (targets, then the VaRM merge),
   the gold-only control, other stage-2 merges as an ablation grid, `--seeds N` training seeds;
   every model served in turn (transformers in process by default), answering the zoo domains
   (programmatic judges) and a few MT-Bench-style questions (the LLM-judge path, with the tiny
   pivot as judge: a pipeline check, labelled so in the report);
   Before it, the A/A check (`fuseval aa`): the demo world's pivot against itself, 20 pairs of answer
   sets at temperature 0.7 (false alarm rates; the noise split by source);
3. writes each suite's HTML and Markdown report (the demo's shows the positive control's verdict) and
   ends with both worlds' verdicts of fused against the control.

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
from reports.fmt import fmt_estimate

SUITE = BENCHMARKS_DIR / "suites" / "demo.yml"
# world name -> its suite; the positive control runs first, so the demo's report can show it
SUITES = {"known-effect": BENCHMARKS_DIR / "suites" / "demo-known-effect.yml", "default": SUITE}


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
             store: Path | None = None, formats=("html", "md"), worlds=tuple(SUITES), aa_pairs: int = 20) -> str:
    """Build each world, run its suite, write the reports, end with both verdicts; returns the last run's id."""
    from fusion import zoo
    from fusion.common.configfile import read_yaml
    from harness.formats.zoo import write_world_bench
    from harness.run.session import aa_check, run_with_report
    from harness.run.suite import load_suite
    from harness.ui import quiet_libraries

    quiet_libraries()
    workspace = Path(workspace)
    console.print(Text.assemble(("fuseval demo", "bold"), f" in {workspace}: the tiny world, fused and merged, "
                                "benchmarked with intervals (CPU, no downloads)"))
    store = store or workspace / "fuseval.db"
    closing: list[str] = []
    run_id = ""
    chosen = [w for w in SUITES if w in worlds]
    for name in chosen:
        console.print(Text.assemble((f"world {name}", "bold"), f": {WORLD_NOTES[name]}"))
        world = zoo.build_world(workspace / "world", zoo.WORLDS[name]())
        write_world_bench(world)  # its test set, the positive control's bench
        os.environ["FUSEVAL_WORLD"] = str(world.resolve())
        if name == "default":
            os.environ["FUSEVAL_JUDGE"] = str(tiny_judge(world, workspace / "tiny-judge").resolve())
        data = read_yaml(SUITES[name])
        if name == "default":  # the positive control keeps its suite's one seed: the demo stays short
            data["seeds"] = list(range(seeds))
        if backend:
            data["backend"] = {**data.get("backend", {}), "kind": backend}
        if name == "default" and aa_pairs:
            aa_check(load_suite(SUITES[name], data), workspace, store, pairs=aa_pairs, backend=backend)
        run_id, report = run_with_report(SUITES[name], workspace, store, backend, formats, data=data)
        closing += verdict_lines(name, report, [c["name"] for c in data.get("candidates", [])])
    if len(chosen) > 1 and closing:
        console.print(Text("Both worlds, against gold-label training (the control):", style="bold"))
        for line in closing:
            console.print(line, markup=False, highlight=False)
    return run_id


WORLD_NOTES = {
    "known-effect": "the positive control; the pivot never saw the sources' domains and the fusion data's "
                    "answers there are shuffled, so only the teachers can teach those skills",
    "default": "the demo's world; gold labels and teachers mostly agree, so the question is whether the teachers "
               "add anything beyond the labels",
}


def verdict_lines(world: str, report, candidates: list[str]) -> list[str]:
    """One line per named candidate: its seeds-combined difference to the gate's baseline and the verdict."""
    d = report.decision if report is not None else None
    if d is None or d.gate_baseline is None:
        return []
    lines = []
    for v in d.verdicts:
        if v.baseline == d.gate_baseline and v.recipe in candidates:
            lines.append(f"  {world} world: {v.recipe} vs {v.baseline} "
                         f"{fmt_estimate(v.diff, v.low, v.high, v.level, signed=True)}, {v.seeds} seed"
                         f"{'s' if v.seeds != 1 else ''} × {v.questions} questions: {v.outcome or 'no margin'}")
    return lines
