"""fuseval's benchmark runner: serving, generation, judging, the run store and statistics.

Sub-packages, each named for what it owns:
- `backends/`  serving a model: vLLM server, transformers in process, an OpenAI-compatible endpoint;
- `formats/`   question sets, answers, programmatic checks, FastChat files;
- `judges/`    LLM judges, programmatic judges, verdict parsing, the code sandbox;
- `store/`     the SQLite run store: rows keyed by content, the writer lock, DataFrame readers;
- `run/`       suites, building models, generation, judging into the store, lm-eval, the demo;
- `analysis/`  statistics with intervals, score tables, gates, the report's data, wording;
- `cli/`       the `fuseval` command line (nothing else imports it); `ui.py`: terminal output.
"""
