"""Run every performance benchmark in benchmarks/perf and summarize their targets in one table.

    .venv/bin/python benchmarks/perf/run_all.py            # full sizes (`make bench`)
    .venv/bin/python benchmarks/perf/run_all.py --quick    # smallest sizes, a smoke test
    .venv/bin/python benchmarks/perf/run_all.py --only merge

Each benchmark is a script `benchmarks/perf/<name>.py` (files starting with `_` are helpers) that
prints its own table, accepts `--quick`, and writes `.cache/<name>_results.json` with a list of
{metric, value, target, ok}. Exit status: 1 if a benchmark crashed or wrote no results; with
`--strict`, also if a target was missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def benchmarks() -> list[Path]:
    """The benchmark scripts, in name order: every *.py here except this file and helpers."""
    me = Path(__file__).resolve()
    return sorted(p for p in C.HERE.glob("*.py") if p.resolve() != me and not p.name.startswith("_"))


def run_one(script: Path, quick: bool) -> tuple[int, float, dict | None]:
    """Run one benchmark (output streams through); return its exit status, seconds and results."""
    results = C.results_path(script.stem)
    results.unlink(missing_ok=True)  # never summarize a previous run's numbers
    print(f"\n=== {script.stem} ===", flush=True)
    start = time.perf_counter()
    rc = subprocess.run([sys.executable, str(script)] + (["--quick"] if quick else []), cwd=C.REPO).returncode
    seconds = time.perf_counter() - start
    data = json.loads(results.read_text()) if results.exists() else None
    return rc, seconds, data


def _value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "n/a" if v is None else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick: smallest sizes (e.g. tiny merge models)")
    ap.add_argument("--only", default="", help="comma-separated benchmark names to run (default: all)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any target is missed")
    a = ap.parse_args(argv)
    scripts = benchmarks()
    if a.only:
        wanted = {n.strip() for n in a.only.split(",") if n.strip()}
        if unknown := wanted - {s.stem for s in scripts}:
            ap.error(f"unknown benchmark(s) {sorted(unknown)}; have {[s.stem for s in scripts]}")
        scripts = [s for s in scripts if s.stem in wanted]

    rows, crashed, missed = [], [], 0
    for script in scripts:
        rc, seconds, data = run_one(script, a.quick)
        if rc != 0 or data is None:
            crashed.append(f"{script.stem} (exit {rc}{', no results' if data is None else ''})")
        for t in (data or {}).get("targets", []):
            ok = t.get("ok")
            missed += ok is False
            rows.append([script.stem, t["metric"], _value(t.get("value")), t["target"],
                         "n/a" if ok is None else "pass" if ok else "FAIL"])
        if data is None:
            rows.append([script.stem, "(no results)", "n/a", "", "FAIL"])
        print(f"({script.stem}: {seconds:.0f}s)", flush=True)

    print("\n=== summary ===")
    C.print_table(["benchmark", "metric", "value", "target", "ok"], rows)
    print(f"\n{len(rows)} targets, {missed} missed" + (f"; crashed: {', '.join(crashed)}" if crashed else ""))
    return 1 if crashed or (a.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
