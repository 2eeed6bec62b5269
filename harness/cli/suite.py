"""`fuseval run`, `fuseval report`, `fuseval gate`, `fuseval history`: suites, their reports and the CI gate."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from fusion.common.errors import FusevalError
from harness.cli.app import app
from harness.cli.options import STORE
from harness.ui import console, error, results


def _formats(text: str) -> tuple[str, ...]:
    fmts = tuple(f.strip() for f in text.split(",") if f.strip())
    if not fmts or set(fmts) - {"html", "md"}:
        raise FusevalError(f"--format {text!r}: choose html, md or html,md")
    return fmts


@app.command()
def run(
    suite: Path = typer.Argument(..., help="The suite YAML (see benchmarks/suites/)."),
    workspace: Path = typer.Option(Path("runs"), "--workspace", help="Where built models, logs and reports go."),
    store_path: Path = STORE,
    backend: str = typer.Option(None, "--backend", help="Override the suite's backend: vllm, transformers or openai."),
    format: str = typer.Option("html,md", "--format", help="Report formats: html, md or html,md."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report at the end."),
    wait: bool = typer.Option(False, "--wait", help="If another command is filling the store, wait for it instead "
                              "of refusing."),
) -> None:
    """Run a suite: build missing candidates, serve each in turn, answer, judge, compare, report.

    Interrupted (even by kill -9), it resumes where it stopped when run again. One command at a time
    fills a store: a second `run` on the same store refuses (or, with --wait, waits its turn)."""
    from harness.run.session import run_and_report

    run_and_report(suite, workspace, store_path, backend, _formats(format), report=report, wait=wait)


@app.command("report")
def report_(
    run_id: str = typer.Argument("latest", help="A run id, or 'latest'."),
    out: Path = typer.Option(None, "--out", help="Directory (default: <workspace>/reports/<run id>)."),
    format: str = typer.Option("html,md", "--format", help="html, md or html,md."),
    store_path: Path = STORE,
) -> None:
    """Write the HTML and Markdown report of a recorded run (no serving, no judging)."""
    from harness.run.session import write_report
    from harness.store import Store

    _existing(store_path)
    with Store(store_path) as store:
        for kind, p in write_report(store, run_id, out, _formats(format)).items():
            console.print(f"report ({kind}): {p}")


def _existing(store_path: Path) -> None:
    if not store_path.exists():
        raise FusevalError(f"{store_path}: no store yet; run a suite first")


def _resolve_run(store, suite_or_run: str) -> dict:
    p = Path(suite_or_run)
    if p.suffix in (".yml", ".yaml") or p.is_file():
        from fusion.common.configfile import read_yaml

        data = read_yaml(p)
        name = data.get("name") if isinstance(data, dict) else None
        if not name:
            raise FusevalError(f"{p}: a suite needs a name")
        run_id = store.latest_run(name)
        if run_id is None:
            raise FusevalError(f"{store.path}: no finished run of suite {name!r}; `fuseval run {p}` first")
        return store.run(run_id)
    return store.run(suite_or_run)


@app.command()
def gate(
    suite_or_run: str = typer.Argument(..., help="A suite YAML (its latest finished run), a run id, or 'latest'."),
    baseline: str = typer.Option(..., "--baseline", help="The baseline: a model of the run, or a recipe (e.g. "
                                                         "control: its seeds meet the candidates' own)."),
    margin: float = typer.Option(..., "--margin", help="Practical margin m (score units): differences within ±m "
                                                       "do not matter."),
    level: float = typer.Option(0.90, "--level", min=0.5, max=0.999, help="Two-sided interval level (0.90 = one-sided "
                                                                          "95% on each side)."),
    bench: str = typer.Option(None, "--bench", help="Bench to gate on (default: the run's first)."),
    judge: str = typer.Option(None, "--judge", help="Judge whose id contains this (default: the bench's first)."),
    fail_on_inconclusive: bool = typer.Option(False, "--fail-on-inconclusive", help="Exit 1 on inconclusive too."),
    per_seed: bool = typer.Option(False, "--per-seed", help="Gate each training seed's model against its own "
                                                           "seed's baseline, instead of each recipe with its seeds "
                                                           "combined."),
    store_path: Path = STORE,
) -> None:
    """CI gate: each candidate recipe minus the baseline, its interval against ±margin.

    A recipe trained with several seeds is gated once, on an interval that carries the between-seed and
    the question noise (--per-seed: once per seed). Exit codes: 0 improved or equivalent (or inconclusive,
    unless --fail-on-inconclusive), 1 regressed, 2 could not evaluate.
    """
    from harness.analysis.results import gate_run
    from harness.store import Store

    try:
        if margin < 0:
            raise FusevalError(f"--margin {margin}: a margin is zero or positive")
        _existing(store_path)
        with Store(store_path) as store:
            gates = gate_run(store, _resolve_run(store, suite_or_run), baseline, margin, level, bench, judge,
                             per_seed=per_seed)
    except FusevalError as e:
        error(f"{e} (gate could not evaluate)")
        sys.exit(2)
    if not gates:
        error("no candidates to gate besides the baselines (gate could not evaluate)")
        sys.exit(2)
    for g in gates:
        results.print(g.sentence, highlight=False)
    outcomes = {g.outcome for g in gates}
    if "regressed" in outcomes or (fail_on_inconclusive and "inconclusive" in outcomes):
        sys.exit(1)


@app.command()
def history(
    suite: str = typer.Option(None, "--suite", help="Only this suite's runs."),
    model: list[str] = typer.Option([], "--model", help="Only these models (repeatable)."),
    store_path: Path = STORE,
) -> None:
    """Nightly trends: each run's overall score per model, bench and judge, with its 95% interval."""
    from rich.table import Table

    from harness.analysis.wording import fmt_interval, fmt_number
    from harness.store import Store

    _existing(store_path)
    with Store(store_path) as store:
        df = store.history(suite)
    if model:
        df = df[df["model"].isin(model)]
    if df.empty:
        console.print("no finished runs with results" + (f" for suite {suite!r}" if suite else ""))
        return
    import time

    for (s, bench, judge), part in df.groupby(["suite", "bench", "judge"], sort=False):
        t = Table(title=f"{s}: {bench} ({judge})", title_justify="left")
        for col in ("run", "started", "model", "mean", "95% interval", "questions"):
            t.add_column(col, justify="right" if col in ("mean", "95% interval", "questions") else "left")
        for r in part.itertuples():
            t.add_row(r.run_id, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started)), r.model,
                      fmt_number(r.mean), fmt_interval(r.low, r.high), str(r.questions))
        results.print(t)


@app.command()
def aa(
    suite: Path = typer.Argument(..., help="The suite YAML: its gate's baseline, bench and margin are checked."),
    model: str = typer.Option(None, "--model", help="The model checked against itself (default: the gate's "
                                                    "baseline; a checkpoint or merge model)."),
    pairs: int = typer.Option(20, "--pairs", min=1, help="Pairs of answer sets to gate; each pair answers the "
                                                         "bench twice."),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="Sampling temperature of every answer: "
                                                                           "answers must vary for the check to "
                                                                           "test anything."),
    workspace: Path = typer.Option(Path("runs"), "--workspace", help="Where built models and logs go."),
    store_path: Path = STORE,
    backend: str = typer.Option(None, "--backend", help="Override the suite's backend: vllm or transformers."),
) -> None:
    """A/A check: one model against itself, answered under other sampling seeds, gated --pairs times.

    Prints how often the gate raised a false "improved" or "regressed" (each expected at 5% or less),
    with 95% intervals, and records the result in the store, where the suite's report shows it.
    """
    from harness.run.session import aa_check
    from harness.run.suite import load_suite

    aa_check(load_suite(suite), workspace, store_path, model, pairs, temperature, backend)
