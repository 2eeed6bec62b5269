"""Running benchmarks: suites, building their models, generating, judging, lm-eval, the demo.

    ls = load_suite("benchmarks/suites/demo.yml")
    run_id = run_suite(ls, workspace=Path("runs"), store=Store("runs/fuseval.db"))

Modules: `suite` (the suite file), `build` (merge and fuse candidates), `generate` (answers to a
question set), `evaluate` (generation and judging through the store), `runner` (a whole suite),
`resolve` (bench names, judge choice and identity, backend options: one rule for CLI and runner),
`lmeval` (lm-evaluation-harness tasks), `session` (a run and its report), `demo`.
Names are imported on first use, so importing one module does not load the others.
"""

from fusion.common.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "LoadedSuite": "harness.run.suite", "Suite": "harness.run.suite", "load_suite": "harness.run.suite",
    "Built": "harness.run.build", "build_models": "harness.run.build",
    "GenerationSettings": "harness.run.generate", "generate_answers": "harness.run.generate",
    "generate_into_store": "harness.run.evaluate", "judge_single_into_store": "harness.run.evaluate",
    "judge_pairs_into_store": "harness.run.evaluate",
    "run_suite": "harness.run.runner", "run_lmeval": "harness.run.lmeval",
    "run_and_report": "harness.run.session", "write_report": "harness.run.session", "run_demo": "harness.run.demo",
})
