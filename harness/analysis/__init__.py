"""From stored judgments to numbers with intervals, and from numbers to words.

Modules: `stats` (the statistics: cluster bootstrap, paired differences, recipes over seeds, gates,
power, variance components), `summary` (score and difference tables of a store), `results` (a run's
scores, history and gates), `recipes` (candidates with their seeds combined: verdicts, ranking, the
decision), `report` (everything a run's report shows) with `details` (provenance, examples, method),
`wording` (numbers as sentences: the only place that writes them). Names are imported on first use.
"""

from fusion.common.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "score_table": "harness.analysis.summary", "difference_table": "harness.analysis.summary",
    "win_table": "harness.analysis.summary",
    "record_results": "harness.analysis.results", "gate_run": "harness.analysis.results",
    "report_data": "harness.analysis.report", "decide": "harness.analysis.recipes",
    "gate_sentence": "harness.analysis.wording", "fmt_estimate": "harness.analysis.wording",
})
