"""lm-evaluation-harness tasks run on our models through its Python API, offline.

    rows = run_lmeval(world / "pivot", ["fuseval_zoo"], work_dir=Path("runs/lmeval"), limit=4)
    rows = run_lmeval(model_dir, ["fuseval_zoo"], backend="vllm", base_url=server.base_url,
                      served_name="pivot", work_dir=Path("runs/lmeval"))

Our own tasks (`fuseval_zoo`, a group of one multiple-choice task per zoo category) are written
from benchmarks/zoo/question.jsonl into `work_dir/tasks` at run time: lm-eval's local json datasets
need an absolute data path, so no task YAML is committed (benchmarks/lmeval/README.md). Built-in
lm-eval tasks work too where their datasets are already in the local Hugging Face cache.
The "transformers" backend is lm-eval's `hf` model; "vllm" is `local-completions` against a
running server (prompt log-probs via `echo`), tokenized locally with the model's own tokenizer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fusion.common.errors import FusevalError
from fusion.common.files import atomic_write_text
from fusion.common.hashing import digest
from harness.analysis.stats import mean_interval
from harness.backends.vllm_server import served_context
from harness.formats.questions import load_questions, resolve_bench

log = logging.getLogger(__name__)

# Bump when the generated tasks change (prompt, choices, metrics): it is part of task_key.
ZOO_TASKS_VERSION = 1
ZOO_GROUP = "fuseval_zoo"
N_CHOICES = 4  # the reference and three distractors
# lm-eval reads the offline switches when huggingface_hub/datasets are imported; we set both the
# variables and, for modules already imported, the constants they were read into.
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE")
_OFFLINE_CONSTS = (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                   ("datasets.config", "HF_DATASETS_OFFLINE"))


def zoo_docs(questions_path: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """Multiple-choice docs per category: a question's first turn, its reference, 3 same-category distractors.

    Distractors are the next distinct references of the category (cyclically) and the gold answer sits
    at position i mod 4, so the data is a pure function of the question file.
    """
    by_cat: dict[str, list] = {}
    for q in load_questions(questions_path or resolve_bench("zoo")):
        if q.reference:
            by_cat.setdefault(q.category, []).append(q)
    docs: dict[str, list[dict[str, Any]]] = {}
    for cat, qs in sorted(by_cat.items()):
        refs = [q.reference[0] for q in qs]
        if len(set(refs)) < N_CHOICES:
            raise FusevalError(f"zoo category {cat!r} has {len(set(refs))} distinct first-turn references; "
                               f"a {N_CHOICES}-way choice needs at least {N_CHOICES}")
        docs[cat] = []
        for i, q in enumerate(qs):
            wrong: list[str] = []
            for r in refs[i + 1:] + refs[:i]:
                if r != refs[i] and r not in wrong and len(wrong) < N_CHOICES - 1:
                    wrong.append(r)
            gold = i % N_CHOICES
            docs[cat].append({"question_id": q.question_id, "question": q.turns[0],
                              "choices": wrong[:gold] + [refs[i]] + wrong[gold:], "gold": gold})
    return docs


def _write_if_changed(path: Path, text: str) -> None:
    # An unchanged data file keeps its mtime, so the datasets cache built from it stays valid.
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def write_zoo_tasks(out_dir: str | Path, questions_path: str | Path | None = None) -> list[str]:
    """Write the `fuseval_zoo` group and one task per category; returns the task names.

    Layout: out_dir/tasks/*.yaml (lm-eval's include path), out_dir/data/*.jsonl (absolute paths in the
    YAML) and out_dir/hf-datasets (the datasets cache of those files).
    """
    out = Path(out_dir).resolve()
    metrics = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")]
    names = []
    for cat, docs in zoo_docs(questions_path).items():
        name = f"{ZOO_GROUP}_{cat}"
        data = out / "data" / f"{name}.jsonl"
        _write_if_changed(data, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
        task = {"task": name, "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(out / "hf-datasets")},
                "test_split": "test", "fewshot_split": "test",  # few-shot examples exclude the question asked
                "output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
                "doc_to_choice": "choices", "doc_to_target": "gold", "metric_list": metrics,
                "metadata": {"version": ZOO_TASKS_VERSION}}
        _write_if_changed(out / "tasks" / f"{name}.yaml", yaml.safe_dump(task, sort_keys=False))
        names.append(name)
    group = {"group": ZOO_GROUP, "task": names,
             "aggregate_metric_list": [{"metric": m, "aggregation": "mean", "weight_by_size": True}
                                       for m in ("acc", "acc_norm")],
             "metadata": {"version": ZOO_TASKS_VERSION}}
    _write_if_changed(out / "tasks" / f"{ZOO_GROUP}.yaml", yaml.safe_dump(group, sort_keys=False))
    for stale in (out / "tasks").glob(f"{ZOO_GROUP}_*.yaml"):  # a category since removed from the questions
        if stale.stem not in names:
            stale.unlink()
    return [ZOO_GROUP, *names]


def task_key(tasks: list[str], limit: int | None, num_fewshot: int | None) -> str:
    """A stable key for a set of lm-eval results: tasks (any order), limit, shots and our task version."""
    return digest("lmeval", sorted(tasks), limit, num_fewshot, ZOO_TASKS_VERSION)[:16]


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Hugging Face hub, datasets and evaluate offline for the duration; the previous state is restored."""
    env = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    consts = [(m, a, getattr(sys.modules[m], a)) for m, a in _OFFLINE_CONSTS if m in sys.modules]
    os.environ.update(dict.fromkeys(_OFFLINE_ENV, "1"))
    for m, a, _ in consts:
        setattr(sys.modules[m], a, True)
    try:
        yield
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for m, a, v in consts:
            setattr(sys.modules[m], a, v)


@contextlib.contextmanager
def _own_rng() -> Iterator[None]:
    """simple_evaluate seeds the global random, numpy and torch generators (as the lm-eval CLI does, so
    scores match it); the caller's generator states are put back afterwards."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _completions_url(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url if url.endswith("/completions") else url + "/completions"


def _model(model_path: Path, backend: str, base_url: str | None, served_name: str | None) -> tuple[str, dict[str, Any]]:
    if not (model_path / "config.json").is_file():
        raise FusevalError(f"{model_path}: not a model directory (no config.json)")
    if backend == "transformers":  # trust_remote_code stays at lm-eval's default, False
        return "hf", {"pretrained": str(model_path)}
    if backend == "vllm":
        if not base_url:
            raise FusevalError("lm-eval on the vllm backend needs the server's base_url (e.g. http://127.0.0.1:8000/v1)")
        url = _completions_url(base_url)
        args = {"model": served_name or model_path.name, "base_url": url, "tokenizer": str(model_path),
                "tokenizer_backend": "huggingface", "tokenized_requests": True, "max_retries": 2}
        if (ctx := served_context(url.rsplit("/", 1)[0])) is not None:
            args["max_length"] = ctx  # lm-eval assumes 2048 otherwise and would send over-long prompts
        return "local-completions", args
    raise FusevalError(f"lm-eval backend {backend!r} is not supported; use transformers or vllm")


def _task_manager(tasks: list[str], include: Path, ours: list[str]):
    """A TaskManager over our tasks; lm-eval's ~15k built-in ones are indexed (~15 s) only when asked for."""
    from lm_eval.tasks import TaskManager  # noqa: PLC0415

    others = [t for t in tasks if t not in ours]
    if not others:
        return TaskManager(include_path=str(include), include_defaults=False)
    unknown = [t for t in others if t.startswith("fuseval_")]  # our prefix: never a built-in
    tm = None
    if not unknown:
        tm = TaskManager(include_path=str(include))
        unknown = [t for t in others if t not in tm.all_tasks]
    if unknown:
        raise FusevalError(f"unknown lm-eval task {', '.join(map(repr, unknown))}: ours are {', '.join(ours)} "
                           f"(also lm-eval's built-in tasks, by name, where their data is cached)")
    return tm


def _per_document(res: dict[str, Any], task: str, metric: str) -> np.ndarray | None:
    """A metric's per-document values where lm-eval logged its samples (a group: its tasks' documents)."""
    samples = res.get("samples") or {}
    tasks = res.get("group_subtasks", {}).get(task) or [task]
    values = [d.get(metric) for t in tasks for d in samples.get(t, [])]
    if not values or not all(isinstance(v, (int, float)) for v in values):
        return None
    return np.asarray(values, dtype=float)


def _interval(res: dict[str, Any], task: str, metric: str) -> dict[str, Any]:
    """A 95% cluster-bootstrap interval over the documents (each its own cluster), where samples were logged."""
    values = _per_document(res, task, metric)
    if values is None or len(values) < 2:
        return {}
    _, low, high = mean_interval(values, np.arange(len(values)), level=0.95, n_boot=2000)
    return {"low": low, "high": high, "interval": "cluster bootstrap over the documents"}


def _rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    n_of = {t: int(v["effective"]) for t, v in res.get("n-samples", {}).items()}
    for group, subtasks in res.get("group_subtasks", {}).items():
        n_of.setdefault(group, sum(n_of.get(t, 0) for t in subtasks))
    rows = []
    for task, metrics in res["results"].items():
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if not filt or "_stderr" in name or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{name}_stderr,{filt}")
            rows.append({"task": task, "metric": name if filt == "none" else f"{name}/{filt}", "value": float(value),
                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                         "n": n_of.get(task), **(_interval(res, task, name) if filt == "none" else {})})
    return rows


def run_lmeval(model_path: Path, tasks: list[str], backend: str = "transformers", base_url: str | None = None,
               served_name: str | None = None, limit: int | None = None, num_fewshot: int | None = None, *,
               work_dir: Path, batch_size: int = 8, device: str = "cpu") -> list[dict[str, Any]]:
    """Run lm-eval tasks on a model; one row {task, metric, value, stderr, n} per task (and group) and metric.

    `limit` caps the questions of each task (a group's limit applies to each of its tasks).
    """
    if not tasks:
        raise FusevalError("lm-eval: name at least one task")
    model_path = Path(model_path).resolve()
    model, model_args = _model(model_path, backend, base_url, served_name)
    work_dir = Path(work_dir).resolve()
    with offline(), _own_rng():
        try:
            import lm_eval  # noqa: PLC0415
        except ImportError as e:
            raise FusevalError("lm-eval is not installed: pip install 'fuseval[lmeval]'") from e
        tm = _task_manager(list(tasks), work_dir / "tasks", write_zoo_tasks(work_dir))
        log.info("lm-eval %s on %s (%s, limit %s, shots %s)", tasks, model_path, model, limit, num_fewshot)
        # Its API model warns on every run that batched requests need a server that takes them; vLLM's does.
        logging.getLogger("lm_eval.models.api_models").setLevel(logging.ERROR)
        # lm-eval draws its own tqdm bars (explicitly enabled) on stderr; they go to a log beside its tasks.
        with open(work_dir / "lmeval-stderr.log", "a") as err, contextlib.redirect_stderr(err):
            try:
                res = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=list(tasks), task_manager=tm,
                                              limit=limit, num_fewshot=num_fewshot, batch_size=batch_size,
                                              device=device, log_samples=True)
            except Exception as e:  # lm-eval raises bare exceptions of many kinds; the cause stays chained
                first = (str(e).strip().splitlines() or [""])[0]
                raise FusevalError(f"lm-eval failed on {', '.join(tasks)} with {model} ({model_path}): "
                                   f"{type(e).__name__}: {first} (its output: {err.name})") from e
    return _rows(res)
