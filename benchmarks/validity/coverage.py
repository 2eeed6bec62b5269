"""How often do our intervals cover the truth? Simulated paired comparisons, shaped like the benches we report.

    .venv/bin/python benchmarks/validity/coverage.py            # ~3 min on 2 cores
    .venv/bin/python benchmarks/validity/coverage.py --quick    # fewer simulations (~30 s)

Shapes (candidate − baseline, paired on the same questions, two turns per question):
- `mt-bench`: 1-10 integer grades; question difficulty shared by both models (SD 1.5), a candidate gain
  that varies by question (SD 0.8), answer noise per turn (SD 1.0) and judge noise per re-judge
  (SD 0.18), rounded and clipped to 1..10;
- `zoo`: 0/1 correctness per turn from a logistic model with shared question ease (SD 1.2), the
  candidate at 65% and the baseline at 55% on average.
Sizes: 10 questions (one MT-Bench category), 20 (one zoo domain), 80 (MT-Bench), 100 (the zoo).
The truth is each shape's population mean difference, from 2,000,000 simulated questions. Methods:
`percentile` (the plain cluster-bootstrap percentile interval, what fuseval used before) and
`expanded` (fuseval's `paired_difference` now: the expanded percentile interval). The seeds-and-
questions interval of `harness.analysis.stats.seed_estimate` is checked on zoo-shaped recipes with 2
and 3 training seeds whose effect SD is below (0.02) and above (0.07) the question standard error.

The last line is the coverage of the intervals fuseval prints without a caveat, pooled over every shape
and size (recipes whose few seeds vary more than the question noise are printed with one, and are
shown on their own lines):
`coverage: 0.9xx (lo to hi) over N simulated comparisons`, with a 95% Wilson interval for the
Monte-Carlo error.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness.analysis.stats import paired_difference, seed_estimate  # noqa: E402

SIZES = {"mt-bench": (10, 20, 80), "zoo": (10, 20, 100)}


def mt_bench(questions: int, rng: np.random.Generator, shift: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidate, baseline, question ids) rows of one MT-Bench-shaped comparison."""
    q = rng.normal(0, 1.5, questions)
    gain = rng.normal(0, 0.8, questions)
    cand, base = [], []
    for _turn in range(2):
        b = 6.0 + q + rng.normal(0, 1.0, questions)
        c = b + shift + gain + rng.normal(0, 1.0, questions)
        base.append(np.clip(np.round(b + rng.normal(0, 0.18, questions)), 1, 10))
        cand.append(np.clip(np.round(c + rng.normal(0, 0.18, questions)), 1, 10))
    return np.concatenate(cand), np.concatenate(base), np.tile(np.arange(questions), 2)


def zoo(questions: int, rng: np.random.Generator, p_cand: float = 0.65,
        p_base: float = 0.55) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidate, baseline, question ids) rows of one zoo-shaped comparison: 0/1 per turn."""
    ease = rng.normal(0, 1.2, questions)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    pb = 1 / (1 + np.exp(-(logit(p_base) + ease)))
    pc = 1 / (1 + np.exp(-(logit(p_cand) + ease)))
    base = (rng.random((2, questions)) < pb).astype(float)
    cand = (rng.random((2, questions)) < pc).astype(float)
    return cand.reshape(-1), base.reshape(-1), np.tile(np.arange(questions), 2)


SHAPES = {"mt-bench": mt_bench, "zoo": zoo}


def truth(shape: str, n: int = 2_000_000) -> float:
    cand, base, _ = SHAPES[shape](n, np.random.default_rng(12345))
    return float((cand - base).mean())


def percentile(cand: np.ndarray, base: np.ndarray, q: np.ndarray, level: float, n_boot: int,
               rng: np.random.Generator) -> tuple[float, float]:
    """The plain percentile cluster bootstrap (before): the reference the expanded interval replaced."""
    g = q.max() + 1
    sums = np.bincount(q, weights=cand - base, minlength=g)
    counts = np.bincount(q, minlength=g).astype(float)
    w = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot).astype(float)
    means = (w @ sums) / (w @ counts)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def paired_coverage(shape: str, questions: int, sims: int, n_boot: int, level: float = 0.95,
                    seed: int = 0) -> dict[str, tuple[int, float]]:
    """{method: (hits, mean width)} over `sims` simulated comparisons of one shape and size."""
    rng = np.random.default_rng(seed)
    true = truth(shape)
    out = {"percentile": [0, 0.0], "expanded": [0, 0.0]}
    for i in range(sims):
        cand, base, q = SHAPES[shape](questions, rng)
        _, lo, hi = paired_difference(cand, base, q, level=level, n_boot=n_boot, seed=i)
        out["expanded"][0] += lo <= true <= hi
        out["expanded"][1] += (hi - lo) / sims
        lo, hi = percentile(cand, base, q, level, n_boot, rng)
        out["percentile"][0] += lo <= true <= hi
        out["percentile"][1] += (hi - lo) / sims
    return {k: (int(v[0]), float(v[1])) for k, v in out.items()}


def seed_coverage(seeds: int, questions: int, sims: int, seed_sd: float, level: float = 0.95,
                  seed: int = 1) -> tuple[int, float, int]:
    """(hits, mean width, intervals flagged as few seeds that vary a lot) of the seeds-and-questions interval on
    zoo-shaped recipes: each seed's model moves its pass rate by a seed effect with SD `seed_sd`."""
    rng = np.random.default_rng(seed)
    true = truth("zoo")
    hits, width, flagged = 0, 0.0, 0
    for _ in range(sims):
        rows = []
        for s in range(seeds):
            shift = rng.normal(0, seed_sd / 0.2)  # a logit shift: 0.2 x shift on the pass rate
            cand, base, q = zoo(questions, rng, p_cand=min(0.95, max(0.05, 0.65 + 0.2 * shift)))
            rows.append((cand - base, np.full(len(q), s), q))
        d, s_lab, q_lab = (np.concatenate(x) for x in zip(*rows))
        e = seed_estimate(d, s_lab, q_lab, level=level)
        hits += e.low <= true <= e.high
        width += (e.high - e.low) / sims
        flagged += e.seed_dominated
    return hits, width, flagged


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000, help="simulated comparisons per shape and size")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples per interval")
    ap.add_argument("--quick", action="store_true", help="300 simulations per cell")
    a = ap.parse_args(argv)
    sims = 300 if a.quick else a.sims
    t0 = time.perf_counter()
    print(f"{'shape':<9} {'questions':>9} {'method':<11} {'coverage (95% MC interval)':<28} {'mean width':>10}")
    pooled = [0, 0]
    for shape, sizes in SIZES.items():
        for n in sizes:
            for method, (hits, width) in paired_coverage(shape, n, sims, a.boot).items():
                lo, hi = wilson(hits, sims)
                print(f"{shape:<9} {n:>9} {method:<11} {hits / sims:.3f} ({lo:.3f} to {hi:.3f}){'':<8} {width:>10.3f}")
                if method == "expanded":
                    pooled[0] += hits
                    pooled[1] += sims
    # seeds that vary less than the question noise (SD 0.02 on the pass rate; the question SE at 100
    # questions is about 0.05), and seeds that vary more (SD 0.07): the report flags the latter ("Few seeds")
    for seeds, seed_sd in ((2, 0.02), (3, 0.02), (2, 0.07), (3, 0.07)):
        hits, width, flagged = seed_coverage(seeds, 100, sims, seed_sd)
        lo, hi = wilson(hits, sims)
        print(f"{'seeds×zoo':<9} {100:>9} {f'{seeds} seeds':<11} {hits / sims:.3f} ({lo:.3f} to {hi:.3f}){'':<8} "
              f"{width:>10.3f}   seed SD {seed_sd}: {flagged / sims:.0%} flagged as few seeds that vary a lot")
        if seed_sd < 0.05:  # the pooled line counts the intervals the report prints without that caveat
            pooled[0] += hits
            pooled[1] += sims
    lo, hi = wilson(*pooled)
    print(f"({time.perf_counter() - t0:.0f} s; 95% intervals; the truth from 2,000,000 simulated questions)")
    print(f"coverage: {pooled[0] / pooled[1]:.3f} ({lo:.3f} to {hi:.3f}) over {pooled[1]} simulated comparisons")


if __name__ == "__main__":
    main()
