"""A suite run with its report, as `fuseval run` and the demo do it: lock the store, run, report, print.

    run_id = run_and_report(Path("benchmarks/suites/demo.yml"), Path("runs"), Path("runs/fuseval.db"),
                            backend=None, formats=("html", "md"))
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.run.suite import LoadedSuite, load_suite
from harness.store import Store, exclusive
from harness.ui import Phases, console, progress, quiet_libraries, results

if TYPE_CHECKING:
    from reports.data import ReportData


def write_report(store: Store, run_id: str, out: Path | None, formats=("html", "md"),
                 data: ReportData | None = None) -> dict[str, Path]:
    """Render one run's report (default: <workspace>/reports/<run id>/)."""
    from harness.analysis.report import report_data  # the report's stack (pandas, matplotlib) only when drawing
    from reports.render import render_report

    data = data or report_data(store, run_id)
    out = out or Path(data.run["workspace"] or "runs") / "reports" / data.run["id"]
    return render_report(data, out, formats)


def print_headline(data: ReportData) -> None:
    """The report's decision block on stdout: the answer, each recipe's verdicts, the gate's tally, caveats."""
    from reports.render import decision_lines

    for line in decision_lines(data):
        results.print(line, markup=False, highlight=False)


def run_and_report(suite_path: Path, workspace: Path, store_path: Path, backend: str | None, formats,
                   data: dict | None = None, report: bool = True, wait: bool | None = None) -> str:
    """Run a suite and write its report, holding the store's lock; `wait=None`: the caller has no --wait.

    The lock is taken before the runner and the report's libraries are imported, so a second command
    finds it held (and says so) as soon as possible."""
    return run_with_report(suite_path, workspace, store_path, backend, formats, data, report, wait)[0]


def run_with_report(suite_path: Path, workspace: Path, store_path: Path, backend: str | None, formats,
                    data: dict | None = None, report: bool = True,
                    wait: bool | None = None) -> tuple[str, ReportData | None]:
    """`run_and_report`, returning the run id and the report's data (None with report=False)."""
    ls = load_suite(suite_path, data)
    with exclusive(store_path, "run", wait=bool(wait), on_wait=console.print, can_wait=wait is not None):
        return _run_and_report(ls, workspace, store_path, backend, formats, report)


def _run_and_report(ls: LoadedSuite, workspace: Path, store_path: Path, backend: str | None, formats,
                    report: bool) -> tuple[str, ReportData | None]:
    from harness.analysis.report import report_data
    from harness.run.runner import run_suite

    quiet_libraries()
    with Store(store_path) as store, progress() as prog:
        run_id = run_suite(ls, workspace, store, backend=backend, say=lambda s: prog.console.print(s),
                           progress=Phases(prog))
    data = None
    with Store(store_path) as store:
        console.print(f"run {run_id} recorded in {store_path}")
        if report:
            data = report_data(store, run_id)
            for kind, p in write_report(store, run_id, None, formats, data).items():
                console.print(f"report ({kind}): {p}")
            print_headline(data)
    return run_id, data


def aa_check(ls: LoadedSuite, workspace: Path, store_path: Path, model: str | None = None, pairs: int = 20,
             temperature: float = 0.7, backend: str | None = None) -> dict:
    """The A/A check as `fuseval aa` and the demo run it: under the store's lock, with a progress bar; the rates
    printed with their intervals. Returns the recorded result."""
    from harness.run.aa import run_aa

    quiet_libraries()
    with exclusive(store_path, "aa"), Store(store_path) as store, progress() as prog:
        r = run_aa(ls, workspace, store, model, pairs, temperature, backend, say=lambda s: prog.console.print(s))
    results.print(f"A/A: {r['model']} against itself on {r['bench']} ({r['pairs']} pairs, temperature "
                  f"{r['temperature']:g}, margin ±{r['margin']:g}, {r['level']:.0%} intervals):", highlight=False)
    for o in ("improved", "regressed"):
        f = r[f"false_{o}"]
        results.print(f"  false {o}: {f['hits']}/{r['pairs']} = {f['rate']:.0%} (95% interval "
                      f"{f['interval'][0]:.0%} to {f['interval'][1]:.0%}); expected 5% or less", highlight=False)
    return r
