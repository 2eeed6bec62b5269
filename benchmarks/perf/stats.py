"""Statistics benchmark: the vectorized cluster bootstrap and Bradley–Terry (DESIGN.md sections 3.5 and 7).

    .venv/bin/python benchmarks/perf/stats.py           # 1,000 questions x 2 turns x 3 samples, 10,000 resamples
    .venv/bin/python benchmarks/perf/stats.py --quick   # 100 questions, 1,000 resamples (smoke test)

1. mean_interval on 6,000 rows (1,000 questions x 2 turns x 3 samples, question effects + noise)
   with 10,000 cluster-bootstrap resamples, best of 3, against the loop people write: per resample,
   draw question ids with replacement, gather those questions' rows (index arrays precomputed,
   not timed) and take their mean. The loop is timed on 500 resamples and scaled linearly to
   10,000 (its cost per resample is constant). Both intervals are printed; they must agree within
   Monte-Carlo error.
2. bradley_terry on 5 models x 1,000 comparisons (500 questions of 2 comparisons) with 1,000
   resamples, best of 3 (the first call, which imports pandas, is not timed).

Targets: mean_interval under 1 s on this 2-core machine; bradley_terry under 2 s. With --quick the
sizes are smaller, so the targets are reported but not judged. Results also go to
benchmarks/perf/.cache/stats_results.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

sys.path.insert(0, str(C.REPO))
from harness.analysis.stats import bradley_terry, mean_interval  # noqa: E402

SIZES = {  # (questions, bootstrap resamples, loop resamples, BT comparisons, BT resamples)
    "full": (1_000, 10_000, 500, 1_000, 1_000),
    "quick": (100, 1_000, 100, 200, 100),
}


def suite_scores(n_questions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MT-Bench-shaped rows: question effect + turn/sample noise, 2 turns x 3 samples per question."""
    rng = np.random.default_rng(seed)
    clusters = np.repeat(np.arange(n_questions), 6)
    scores = 6.5 + rng.normal(0, 1.5, n_questions)[clusters] + rng.normal(0, 1.0, len(clusters))
    return np.clip(scores, 1, 10), clusters


def loop_interval(scores: np.ndarray, clusters: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """(seconds per resample, low, high) of a per-resample numpy loop that pools the drawn questions' rows."""
    ids = np.unique(clusters)
    rows = [np.flatnonzero(clusters == q) for q in ids]  # setup, not timed
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    means = np.empty(n_boot)
    for i in range(n_boot):
        pick = rng.integers(0, len(ids), len(ids))
        means[i] = scores[np.concatenate([rows[k] for k in pick])].mean()
    per = (time.perf_counter() - start) / n_boot
    return per, float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def bt_comparisons(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n comparisons of 5 models with known log-strengths, 2 per question, about 10% ties."""
    rng = np.random.default_rng(seed)
    names, strength = np.array(["m0", "m1", "m2", "m3", "m4"]), np.array([0.8, 0.4, 0.0, -0.4, -0.8])
    ia = rng.integers(0, 5, n)
    ib = (ia + rng.integers(1, 5, n)) % 5
    y = (rng.random(n) < 1 / (1 + np.exp(strength[ib] - strength[ia]))).astype(float)
    y[rng.random(n) < 0.1] = 0.5
    return names[ia], names[ib], y, np.arange(n) // 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    size = "quick" if ap.parse_args(argv).quick else "full"
    n_q, n_boot, n_loop, n_bt, bt_boot = SIZES[size]
    full = size == "full"

    scores, clusters = suite_scores(n_q)
    t_ours, (mean, lo, hi) = C.best_of(lambda: mean_interval(scores, clusters, n_boot=n_boot), 3)
    per, lo_ref, hi_ref = loop_interval(scores, clusters, n_loop, seed=1)
    t_loop = per * n_boot
    a, b, y, questions = bt_comparisons(n_bt)
    bradley_terry(a, b, y, questions, n_boot=10)  # warm-up: the pandas import
    t_bt, table = C.best_of(lambda: bradley_terry(a, b, y, questions, n_boot=bt_boot), 3)

    rows = [
        ["rows (questions x 2 turns x 3 samples)", f"{len(scores)} ({n_q} questions)"],
        ["mean_interval resamples", n_boot],
        ["  mean_interval s (best of 3)", f"{t_ours:.3f}"],
        [f"  loop reference s (timed on {n_loop} resamples, scaled x{n_boot // n_loop})", f"{t_loop:.2f}"],
        ["  loop / mean_interval", f"{t_loop / t_ours:.0f}x"],
        ["  95% interval, ours", f"{lo:.3f} to {hi:.3f} (mean {mean:.3f})"],
        [f"  95% interval, loop ({n_loop} resamples)", f"{lo_ref:.3f} to {hi_ref:.3f}"],
        [f"bradley_terry: 5 models x {n_bt} comparisons x {bt_boot} resamples s", f"{t_bt:.3f}"],
        ["  strengths (true 0.8, 0.4, 0, -0.4, -0.8)",
         ", ".join(f"{s:+.2f}" for s in table["strength"].to_numpy())],
    ]
    C.print_table(["measure", "value"], rows)
    targets = [
        C.target(f"mean_interval {len(scores)} rows x {n_boot} resamples seconds (2 cores)", t_ours, "< 1",
                 t_ours < 1 if full else None),
        C.target(f"bradley_terry 5 models x {n_bt} x {bt_boot} resamples seconds", t_bt, "< 2",
                 t_bt < 2 if full else None),
    ]
    print()
    C.print_table(["target", "value", "goal", "ok"],
                  [[t["metric"], f"{t['value']:.3g}", t["target"],
                    "n/a" if t["ok"] is None else "PASS" if t["ok"] else "MISS"] for t in targets])
    path = C.write_results("stats", targets, size=size, mean_interval_s=t_ours, loop_s_scaled=t_loop,
                           loop_resamples_timed=n_loop, ratio=t_loop / t_ours, interval=[lo, hi],
                           loop_interval=[lo_ref, hi_ref], bradley_terry_s=t_bt)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
