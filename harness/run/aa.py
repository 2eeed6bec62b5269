"""The A/A check: one model against itself, answered twice under different sampling seeds, gated many times.

    result = run_aa(load_suite("benchmarks/suites/demo.yml"), Path("runs"), store, model="pivot", pairs=20)

A candidate that is the baseline itself, re-served with other sampling seeds and re-judged, differs
from it only by noise: a gate that calls "improved" or "regressed" then is a false alarm. With
the suite's margin at the 90% level each rate should be 5% or less (about 0 when the margin is
wide); the rates are given with a 95% Wilson interval for their Monte-Carlo error. Each replicate's
answers are kept in the store under their own generation key, so a rerun with more pairs reuses the
ones it has. The result is recorded as a run of the store (suite `<suite>/aa`), which the suite's
report shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fusion.common.errors import FusevalError
from harness.analysis import stats
from harness.analysis.summary import paired_rows
from harness.backends import make_backend
from harness.judges.programmatic import ProgrammaticJudge
from harness.run.build import build_models
from harness.run.evaluate import generate_into_store, judge_single_into_store
from harness.run.runner import load_benches
from harness.run.suite import LoadedSuite
from harness.store import Store

Say = Callable[[str], None]


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson interval of a rate hits/n."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _target(ls: LoadedSuite, model: str | None):
    """The model checked (default: the gate's baseline, else the first checkpoint baseline) and the bench (the
    gate's, else the first with programmatic checks)."""
    if model is None:  # the gate's baseline, or (a trained one, like the control) the first checkpoint baseline
        gate_base = ls.suite.gate.baseline if ls.suite.gate else None
        plain = [m.name for m in ls.models if m.fuse is None and ls.roles[m.name] == "baseline"]
        model = gate_base if gate_base in plain else (plain or [ls.models[0].name])[0]
    name = model
    spec = next((m for m in ls.models if m.name == name), None)
    if spec is None:
        raise FusevalError(f"{ls.path}: a/a: {name!r} is not a model of the suite "
                           f"({', '.join(m.name for m in ls.models)})")
    if spec.fuse is not None:
        raise FusevalError(f"{ls.path}: a/a: {name!r} is trained with seeds; check a checkpoint or merge model")
    benches = [b for b in load_benches(ls) if b.questions and "programmatic" in b.judges]
    wanted = ls.suite.gate.bench if ls.suite.gate else None
    bench = next((b for b in benches if wanted in (None, b.name)), None)
    if bench is None:
        raise FusevalError(f"{ls.path}: a/a needs a bench with programmatic checks (judged for free, many times)")
    return spec, bench


def _outcomes(store: Store, model_hash: str, bench: str, judge: str, keys: list[str], margin: float,
              level: float) -> list[str]:
    df = store.scores(bench=bench)
    df = df[(df["model_hash"] == model_hash) & (df["judge"] == judge)]
    out = []
    for a, b in zip(keys[0::2], keys[1::2]):
        pair = df[df["gen_key"].isin([a, b])]
        pair = pair.assign(model=np.where(pair["gen_key"] == a, "a", "b"))
        both = paired_rows(pair, judge, "a", "b").dropna(subset=["score", "score_base"])
        q = both["question_id"].map(repr).to_numpy()
        outcome, _ = stats.gate_difference(both["score"].to_numpy(float), both["score_base"].to_numpy(float), q,
                                           margin, level=level, n_boot=2000)
        out.append(outcome.value)
    return out


def run_aa(ls: LoadedSuite, workspace: Path, store: Store, model: str | None = None, pairs: int = 20,
           temperature: float = 0.7, backend: str | None = None, say: Say = lambda s: None) -> dict:
    """Answer the gate bench 2 x `pairs` times with one model under other sampling seeds, gate each pair, record."""
    if pairs < 1:
        raise FusevalError("a/a: pairs must be at least 1")
    spec, bench = _target(ls, model)
    margin = ls.suite.gate.margin if ls.suite.gate else 0.0
    level = ls.suite.gate.level if ls.suite.gate else 0.90
    kind = backend or ls.suite.backend.kind or "transformers"
    (built,) = build_models(ls.model_copy(update={"models": [spec]}), store, Path(workspace), kind, say)
    run_id = store.start_run(suite=f"{ls.suite.name}/aa")
    settings = [ls.suite.generation.model_copy(update={"seed": 10_000 + r, "temperature": temperature})
                for r in range(2 * pairs)]
    judge = ProgrammaticJudge()
    try:
        say(f"a/a: {built.name} answers {bench.name} {2 * pairs} times at temperature {temperature:g}")
        with make_backend(kind, built.path, dict(ls.suite.backend.options), model_id=built.name,
                          log_dir=Path(workspace) / "logs", where=f"{ls.path}: backend.options") as server:
            for s in settings:
                rep = generate_into_store(store, server, built.hash, bench.name, bench.questions, s, run_id=run_id)
                if rep.failed:
                    raise FusevalError(f"a/a: {rep.failed} questions failed to generate ({rep.first_error})")
        for s in settings:
            judge_single_into_store(store, judge, built.hash, bench.name, bench.questions, s.digest(), run_id=run_id)
        outcomes = _outcomes(store, built.hash, bench.name, judge.id, [s.digest() for s in settings], margin, level)
    except BaseException:
        store.end_run(run_id, status="failed")
        raise
    result = {"kind": "aa", "suite": ls.suite.name, "model": built.name, "bench": bench.name, "judge": judge.id,
              "pairs": pairs, "temperature": temperature, "margin": margin, "level": level, "outcomes": outcomes,
              "model_hash": built.hash, "gen_keys": [s.digest() for s in settings]}
    for o in ("improved", "regressed"):
        hits = outcomes.count(o)
        result[f"false_{o}"] = {"hits": hits, "rate": hits / pairs, "interval": wilson(hits, pairs)}
    store.end_run(run_id, config=result)
    return result
